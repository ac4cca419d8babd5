"""Built-in attribution methods of cxr-attrib, registered through the ``cxr_attrib`` entry-point group."""
