"""Built-in model adapters of cxr-attrib, registered through the ``cxr_attrib`` entry-point group."""
