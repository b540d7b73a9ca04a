/* rayflow: zoom and pan for a run's graph (no library; CSP script-src 'self', so no inline code).
 * Each .graph-view holding an svg.graph gets: wheel zoom about the pointer, drag to pan,
 * the buttons of its .graph-tools (data-zoom="in" | "out" | "fit" | "1"), and a fit on load
 * when the graph is larger than its box.  A drag does not follow the node link under it.
 * The view survives the live page's refreshes (htmx swaps the graph every few seconds). */
(function () {
  "use strict";
  var saved = null;  // the view the person chose, kept across htmx swaps

  function setup(view) {
    var svg = view.querySelector("svg.graph");
    if (!svg || svg.dataset.zoomable) return;
    svg.dataset.zoomable = "1";
    var full = svg.viewBox.baseVal, W = full.width, H = full.height;
    view.classList.add("zoomable");
    view.style.height = Math.max(240, Math.min(H + 4, window.innerHeight * 0.75)) + "px";
    svg.setAttribute("width", "100%");
    svg.setAttribute("height", "100%");
    var box = { x: 0, y: 0, w: W, h: H };
    function apply() { svg.setAttribute("viewBox", box.x + " " + box.y + " " + box.w + " " + box.h); saved = box; }
    function size() { return { w: view.clientWidth || 1, h: view.clientHeight || 1 }; }
    function fit() {
      var s = size(), k = Math.max(W / s.w, H / s.h);
      box = { w: s.w * k, h: s.h * k, x: (W - s.w * k) / 2, y: (H - s.h * k) / 2 }; apply();
    }
    function actual() { var s = size(); box = { x: 0, y: 0, w: s.w, h: s.h }; apply(); }
    function zoom(f, px, py) {  // f < 1 zooms in; (px, py) stays put (fractions of the box)
      var w = Math.min(Math.max(box.w * f, 40), W * 20), h = box.h * w / box.w;
      box = { x: box.x + (box.w - w) * px, y: box.y + (box.h - h) * py, w: w, h: h }; apply();
    }
    if (saved) { box = saved; apply(); } else if (W > view.clientWidth || H > view.clientHeight) { fit(); } else { actual(); }
    view.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = svg.getBoundingClientRect();
      zoom(e.deltaY > 0 ? 1.15 : 1 / 1.15, (e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
    }, { passive: false });
    svg.addEventListener("pointerdown", function (e) {
      if (e.button !== 0) return;
      moved = false;
      drag = { x: e.clientX, y: e.clientY, box: box, view: view, move: function (dx, dy) {
        var r = svg.getBoundingClientRect(), k = drag.box.w / r.width;
        box = { x: drag.box.x - dx * k, y: drag.box.y - dy * k, w: drag.box.w, h: drag.box.h }; apply();
      } };
    });
    svg.addEventListener("click", function (e) { if (moved) { e.preventDefault(); e.stopPropagation(); moved = false; } }, true);
    var tools = view.parentNode.querySelector(".graph-tools");
    if (tools) {
      tools.hidden = false;
      tools.querySelectorAll("button[data-zoom]").forEach(function (b) {
        b.addEventListener("click", function () {
          var z = b.dataset.zoom;
          if (z === "in") zoom(1 / 1.4, 0.5, 0.5); else if (z === "out") zoom(1.4, 0.5, 0.5); else if (z === "fit") fit(); else actual();
        });
      });
    }
  }

  var drag = null, moved = false;  // one drag at a time, on whichever graph it started (listeners on window: once)
  window.addEventListener("pointermove", function (e) {
    if (!drag) return;
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!moved) { moved = true; drag.view.classList.add("dragging"); }
    drag.move(dx, dy);
  });
  window.addEventListener("pointerup", function () { if (drag) drag.view.classList.remove("dragging"); drag = null; });

  function all() { document.querySelectorAll(".graph-view").forEach(setup); }
  document.addEventListener("DOMContentLoaded", all);
  document.addEventListener("htmx:afterSettle", all);
})();
