// Security groups: list groups and their rules, create a group, add and delete rules.

import {api, neutron} from "./api.js";
import {byId, state} from "./model.js";
import {$, act, clear, deleteButton, fillSelect, formValues, h} from "./ui.js";

let refresh = async () => {};

export function setup(reload) {
  refresh = reload;
  $("sg-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const v = formValues(form);
    const done = await act(`Create security group ${v.name}`, () =>
      api("POST", neutron("security-groups"), {security_group: {
        name: v.name, description: v.description}}));
    if (done) {
      form.reset();
      await refresh();
    }
  });
  $("rule-create").addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(event.currentTarget);
    const rule = {security_group_id: v.security_group_id, direction: v.direction,
                  ethertype: v.ethertype};
    if (v.protocol) rule.protocol = v.protocol;
    if (v.port_range_min) rule.port_range_min = Number(v.port_range_min);
    if (v.port_range_max) rule.port_range_max = Number(v.port_range_max);
    else if (v.port_range_min) rule.port_range_max = Number(v.port_range_min);
    if (v.remote_ip_prefix) rule.remote_ip_prefix = v.remote_ip_prefix;
    const done = await act("Add rule", () =>
      api("POST", neutron("security-group-rules"), {security_group_rule: rule}));
    if (done) await refresh();
  });
}

function describe(rule) {
  const ports = rule.port_range_min === null || rule.port_range_min === undefined ? "any"
    : rule.port_range_min === rule.port_range_max ? String(rule.port_range_min)
      : `${rule.port_range_min}-${rule.port_range_max}`;
  const remoteGroup = rule.remote_group_id && byId(state.security_groups, rule.remote_group_id);
  const remote = rule.remote_ip_prefix ||
    (rule.remote_group_id ? `group ${remoteGroup ? remoteGroup.name : rule.remote_group_id}`
      : "any");
  return {ports, remote};
}

export function render() {
  fillSelect($("rule-create-group"),
    state.security_groups.map((g) => [g.id, `${g.name} (${g.id.slice(0, 8)})`]));
  const list = clear($("sg-list"));
  for (const group of state.security_groups) {
    const rows = (group.security_group_rules || []).map((rule) => {
      const {ports, remote} = describe(rule);
      return h("tr", {"data-id": rule.id},
        h("td", {}, rule.direction), h("td", {}, rule.ethertype),
        h("td", {}, rule.protocol || "any"), h("td", {}, ports), h("td", {}, remote),
        h("td", {}, deleteButton("rule", `${rule.direction} ${rule.protocol || "any"} ${ports}`,
          () => act("Delete rule", () => api("DELETE", neutron(`security-group-rules/${rule.id}`)))
            .then(refresh), `rule-delete-${rule.id}`)));
    });
    const captionId = `sg-caption-${group.id}`;
    list.append(h("section", {class: "group", "data-id": group.id, id: `sg-${group.id}`},
      h("h3", {id: captionId}, group.name, " ", h("span", {class: "mono"}, group.id)),
      group.description ? h("p", {}, group.description) : null,
      group.name === "default" ? null : deleteButton("security group", group.name, () =>
        act(`Delete security group ${group.name}`, () =>
          api("DELETE", neutron(`security-groups/${group.id}`))).then(refresh),
        `sg-delete-${group.id}`),
      h("table", {"aria-labelledby": captionId},
        h("thead", {}, h("tr", {}, ["Direction", "Ether type", "Protocol", "Ports", "Remote",
          "Actions"].map((t) => h("th", {scope: "col"}, t)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", {colspan: 6}, "No rules."))))));
  }
}
