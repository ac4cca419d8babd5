(function () {
  "use strict";
  function key(cell) {
    var value = cell.getAttribute("data-value");
    if (value === null) { return cell.textContent.trim().toLowerCase(); }
    return value === "" ? null : parseFloat(value);
  }
  function compare(x, y) {
    if (x === y) { return 0; }
    if (x === null) { return 1; }
    if (y === null) { return -1; }
    return x < y ? -1 : 1;
  }
  function sortTable(table, column, direction) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = direction === "desc" ? -1 : 1;
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      if (x === null || y === null) { return compare(x, y); }
      return sign * compare(x, y);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      if (i === column) {
        th.setAttribute("aria-sort", direction === "desc" ? "descending" : "ascending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () {
        var next = th.getAttribute("aria-sort") === "ascending" ? "desc" : "asc";
        sortTable(table, column, next);
      });
    });
    table.setAttribute("data-sortable", "ready");
  });
  var wanted = /^#sort=([A-Za-z0-9_-]+):([0-9]+):(asc|desc)$/.exec(window.location.hash);
  if (wanted) {
    var target = document.getElementById(wanted[1]);
    if (target && target.classList.contains("sortable")) {
      sortTable(target, parseInt(wanted[2], 10), wanted[3]);
    }
  }
})();
