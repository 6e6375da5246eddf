// Small DOM helpers shared by every page: element builders, the message area, confirmations.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// h("button", {type: "button", onclick: f}, "Delete")
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function $(id) {
  return document.getElementById(id);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// A label for a control whose meaning the table row gives (screen readers still read it).
export function hiddenLabel(forId, text) {
  return h("label", {for: forId, class: "visually-hidden"}, text);
}

export function showError(err) {
  const box = $("error");
  box.textContent = err.message || String(err);
  box.dataset.type = err.type || "";
  box.dataset.status = err.status || "";
  box.hidden = false;
}

export function clearError() {
  const box = $("error");
  box.textContent = "";
  box.hidden = true;
}

export function showStatus(text) {
  $("status").textContent = text;
}

// While work that redraws the page is in flight, the page is aria-busy.
let pending = 0;

export async function busy(fn) {
  pending += 1;
  document.body.setAttribute("aria-busy", "true");
  try {
    return await fn();
  } finally {
    pending -= 1;
    if (!pending) document.body.removeAttribute("aria-busy");
  }
}

// Runs an action from a button or form: errors go to the message area, success to the status.
export function act(description, fn) {
  return busy(async () => {
    clearError();
    showStatus(`${description}…`);
    try {
      const result = await fn();
      showStatus(`${description}: done.`);
      return result;
    } catch (err) {
      showStatus(`${description}: failed.`);
      showError(err);
      return undefined;
    }
  });
}

// A delete button that asks once more: the first press turns it into "Confirm …" (focused),
// with a Cancel beside it; Escape or Cancel restores it.
export function deleteButton(what, name, onConfirm, id) {
  const wrap = h("span", {class: "confirm"});
  const button = h("button", {type: "button", class: "danger", id,
                              "aria-label": `Delete ${what} ${name}`}, "Delete");
  const reset = () => {
    clear(wrap).append(button);
    button.focus();
  };
  button.addEventListener("click", () => {
    const yes = h("button", {type: "button", class: "danger", id: id && `${id}-confirm`,
                             onclick: () => onConfirm()}, `Confirm delete ${what} ${name}`);
    const no = h("button", {type: "button", id: id && `${id}-cancel`, onclick: reset}, "Cancel");
    clear(wrap).append(yes, " ", no);
    yes.focus();
  });
  wrap.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !wrap.contains(button)) reset();
  });
  wrap.append(button);
  return wrap;
}

export function short(id) {
  return id ? id.slice(0, 8) : "";
}

export function formValues(form) {
  const values = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    values[el.name] = el.type === "checkbox" ? el.checked : el.value.trim();
  }
  return values;
}

// Replaces a <select>'s options, keeping the chosen value when it is still offered.
export function fillSelect(select, options, placeholder) {
  const keep = select.value;
  clear(select);
  if (placeholder !== undefined) select.append(h("option", {value: ""}, placeholder));
  for (const [value, text] of options) select.append(h("option", {value}, text));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}
