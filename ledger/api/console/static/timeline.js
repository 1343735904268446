// The timeline plot: on hand, reserved and available after each entry, one point per entry.
// Pointing at a point (mouse or touch) names the entry: type, source, reference, principal.
(function () {
  "use strict";
  var source = document.getElementById("timeline-data");
  var box = document.getElementById("plot");
  var told = document.getElementById("point");
  if (!source || !box || typeof uPlot === "undefined") return;
  var data = JSON.parse(source.textContent);
  var points = data.points;
  box.dataset.points = "0";
  if (!points.length) { box.textContent = "No entry in this window."; box.classList.add("note"); return; }
  var at = function (p) { return Date.parse(data.axis === "occurred" ? p.time : p.recorded_at) / 1000; };
  var xs = points.map(at);
  // Entries of one batch share their recorded time: a millisecond apart each, so that every one
  // stays a point of its own that the cursor can reach (drag across the plot to zoom in).
  for (var i = 1; i < xs.length; i++) if (xs[i] <= xs[i - 1]) xs[i] = xs[i - 1] + 0.001;
  var columns = [xs,
    points.map(function (p) { return p.on_hand; }),
    points.map(function (p) { return p.reserved; }),
    points.map(function (p) { return p.available; })];
  function text(value) { return value === null || value === undefined || value === "" ? "–" : String(value); }
  function tell(i) {
    if (i === null || i === undefined || i < 0) return;
    var p = points[i];
    told.textContent = "";
    var head = document.createElement("strong");
    head.textContent = p.type + (p.outcome !== "accepted" ? " (" + p.outcome + ")" : "");
    told.appendChild(head);
    told.appendChild(document.createTextNode(
      " · position " + p.position + " · " + (data.axis === "occurred" ? p.time : p.recorded_at) +
      " · source " + text(p.source) + " · reference " + text(p.reference || p.order_id || p.reservation_id) +
      " · principal " + text(p.principal) +
      " · on hand " + p.on_hand + ", reserved " + p.reserved + ", available " + p.available));
  }
  function width() { return Math.max(280, box.clientWidth - 2); }
  var dot = function (color) { return { show: true, size: 7, stroke: color, fill: color }; };
  // One entry gives the axis no width, and uPlot (1.6.32) then spans it over a thousand days, its
  // day in milliseconds taken as seconds; the scale's own range function is not asked for x. Half
  // an hour each side instead, the point in the middle, whenever uPlot sets the axis otherwise (on
  // load, and on a double click's reset). Set in a microtask: uPlot takes no new scale from inside
  // its own hook, and a microtask runs before the frame is painted, so the wrong axis never shows.
  var HALF_HOUR_S = 1800;
  function placeAlone(u) {
    // Within a second: the point's time has a fraction, and floats do not give the span exactly.
    if (xs.length !== 1 || Math.abs(u.scales.x.max - u.scales.x.min - 2 * HALF_HOUR_S) < 1) return false;
    queueMicrotask(function () { u.setScale("x", { min: xs[0] - HALF_HOUR_S, max: xs[0] + HALF_HOUR_S }); });
    return true;
  }
  var plot = new uPlot({
    width: width(), height: 320,
    scales: { x: { time: true } },
    series: [{ label: "time (UTC)" },
      { label: "on hand", stroke: "#1f5fbf", width: 2, points: dot("#1f5fbf"), paths: uPlot.paths.stepped({ align: 1 }) },
      { label: "reserved", stroke: "#c07000", width: 2, points: dot("#c07000"), paths: uPlot.paths.stepped({ align: 1 }) },
      { label: "available", stroke: "#1d8a4a", width: 2, points: dot("#1d8a4a"), paths: uPlot.paths.stepped({ align: 1 }) }],
    tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
    // A drag zooms in on the points between; with one point there is nothing to zoom in on.
    cursor: { points: { size: 10 }, drag: { x: xs.length > 1 } },
    hooks: {
      setCursor: [function (u) { tell(u.cursor.idx); }],
      // The axis's span in seconds, for a test to read (a zoom changes it too).
      setScale: [function (u, key) {
        if (key !== "x" || placeAlone(u)) return;
        box.dataset.xSpanS = String(Math.round(u.scales.x.max - u.scales.x.min));
      }]
    }
  }, columns, box);
  box.dataset.points = String(plot.data[0].length);
  window.addEventListener("resize", function () { plot.setSize({ width: width(), height: 320 }); });
})();
