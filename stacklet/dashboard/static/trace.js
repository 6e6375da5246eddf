// The trace view: POST /stacklet/v1/trace, then the verdict, the numbered hops, and the path
// (ids of ports, networks, routers, floating IPs) drawn on the topology graph step by step.

import {api} from "./api.js";
import {highlight} from "./graph.js";
import {byId, portLabel, serverOf, state} from "./model.js";
import {$, act, clear, formValues, h} from "./ui.js";

const STEP_MS = 700;
let result = null;    // the last trace
let step = -1;        // index into result.path; -1: the whole path
let timer = null;

function svg() {
  return $("topology-svg");
}

function nameOf(id) {
  for (const key of ["ports", "networks", "routers", "floatingips"]) {
    const item = byId(state[key], id);
    if (item) {
      const kind = {ports: "port", networks: "network", routers: "router",
                    floatingips: "floating IP"}[key];
      const server = key === "ports" ? serverOf(item) : undefined;
      if (server) return `port ${portLabel(item)} of instance ${server.name}`;
      const name = key === "ports" ? portLabel(item)
        : key === "floatingips" ? item.floating_ip_address : (item.name || id);
      return `${kind} ${name}`;
    }
  }
  return id;
}

function show(index) {
  if (!result) return;
  const path = result.path || [];
  step = index;
  highlight(svg(), path, index < 0 ? undefined : index);
  $("trace-step").textContent = index < 0
    ? `Whole path: ${path.length} element${path.length === 1 ? "" : "s"}.`
    : `Step ${index + 1} of ${path.length}: ${nameOf(path[index])}`;
  for (const li of $("trace-hops").children) {
    const owner = li.dataset.owner;
    li.classList.toggle("current", index >= 0 && owner === path[index]);
  }
}

function stop() {
  if (timer) clearInterval(timer);
  timer = null;
}

function play() {
  stop();
  if (!result || !(result.path || []).length) return;
  show(0);
  timer = setInterval(() => {
    if (step + 1 >= result.path.length) {
      stop();
      show(-1);
    } else {
      show(step + 1);
    }
  }, STEP_MS);
}

// The graph was drawn again (live update): put the path back on it.
export function redraw() {
  if (result) highlight(svg(), result.path || [], step < 0 ? undefined : step);
}

function endpointLabel(end) {
  if (!end) return "";
  if (end.kind !== "port") return `${end.kind} ${end.ip || ""}`;
  return `port ${end.port_id} (${end.ip})${end.host ? " on " + end.host : ""}`;
}

function renderResult(trace) {
  result = trace;
  const verdict = $("trace-verdict");
  verdict.textContent = `Verdict: ${trace.verdict}${trace.reason ? ". " + trace.reason : ""}`;
  verdict.dataset.verdict = trace.verdict;
  verdict.className = `verdict ${trace.verdict}`;
  const packet = trace.packet || {};
  $("trace-packet").textContent = `${packet.protocol || ""} ${packet.src_ip || ""}` +
    `${packet.sport ? ":" + packet.sport : ""} → ${packet.dst_ip || ""}` +
    `${packet.dport ? ":" + packet.dport : ""} (from ${endpointLabel(trace.src)}, ` +
    `to ${endpointLabel(trace.dst)})`;
  const hops = clear($("trace-hops"));
  for (const hop of trace.hops || []) {
    const where = [hop.node, hop.where, hop.table !== null && hop.table !== undefined
      ? `table ${hop.table}${hop.purpose ? " (" + hop.purpose + ")" : ""}` : ""]
      .filter(Boolean).join(" · ");
    hops.append(h("li", {"data-n": hop.n, "data-owner": hop.owner ? hop.owner.id : undefined},
      h("span", {class: "hop-where"}, where), " ", h("span", {class: "hop-summary"}, hop.summary),
      hop.owner ? h("span", {class: "hop-owner"}, ` [${hop.owner.kind} ${hop.owner.id}]`) : null));
  }
  if (!hops.children.length) {
    hops.append(h("li", {}, "No hop: the trace stopped before the packet left (see the verdict)."));
  }
  $("trace-result").hidden = false;
  $("trace-hop-list").hidden = false;
  play();
}

export function setup() {
  $("trace-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    stop();
    const v = formValues(event.currentTarget);
    const body = {trace: {src: v.src, dst: v.dst, protocol: v.protocol,
                          dport: v.dport ? Number(v.dport) : null,
                          sport: v.sport ? Number(v.sport) : null}};
    const answer = await act(`Trace ${v.src} → ${v.dst}`,
      () => api("POST", "/stacklet/v1/trace", body));
    if (answer) renderResult(answer.trace);
  });
  $("trace-prev").addEventListener("click", () => {
    stop();
    if (result) show(Math.max(step < 0 ? result.path.length - 1 : step - 1, 0));
  });
  $("trace-next").addEventListener("click", () => {
    stop();
    if (result) show(step < 0 ? 0 : Math.min(step + 1, result.path.length - 1));
  });
  $("trace-all").addEventListener("click", () => {
    stop();
    show(-1);
  });
  $("trace-play").addEventListener("click", play);
}

export function render() {
  const list = clear($("trace-endpoints"));
  for (const server of state.servers) {
    if (server.name) list.append(h("option", {value: server.name}, `instance ${server.name}`));
  }
  for (const port of state.ports) {
    if ((port.device_owner || "").startsWith("network:dhcp")) continue;
    list.append(h("option", {value: port.id}, portLabel(port)));
    for (const ip of port.fixed_ips || []) list.append(h("option", {value: ip.ip_address},
      `fixed IP of ${portLabel(port)}`));
  }
  for (const fip of state.floatingips) {
    list.append(h("option", {value: fip.floating_ip_address}, "floating IP"));
  }
}
