// A form generated from a deployment's parameter_openapi_schema (JSON Schema as pydantic writes it:
// string / integer / number / boolean / array / object, enums, $ref into $defs, anyOf with null).
// Values are checked in the browser first; the API's 422 errors land next to their field too.
import { h } from "./util.js";

// What read() returns for a value the browser already knows is wrong.
class Invalid {
  constructor(message) {
    this.message = message;
  }
}

function resolve(schema, root, depth = 0) {
  if (!schema || depth > 8) return schema || {};
  if (schema.$ref && schema.$ref.startsWith("#/")) {
    let target = root;
    for (const part of schema.$ref.slice(2).split("/")) target = target ? target[part] : undefined;
    return resolve({ ...target, ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== "$ref")) },
      root, depth + 1);
  }
  if (schema.allOf && schema.allOf.length === 1) return resolve({ ...schema.allOf[0], ...schema, allOf: undefined }, root, depth + 1);
  const variants = schema.anyOf || schema.oneOf;
  if (variants) {
    const nonNull = variants.filter((v) => v.type !== "null");
    const nullable = nonNull.length < variants.length;
    if (nonNull.length === 1) {
      return { ...resolve(nonNull[0], root, depth + 1), nullable, title: schema.title, default: schema.default,
        description: schema.description };
    }
    return { ...schema, type: "json", nullable };
  }
  return schema;
}

function kindOf(s) {
  if (Array.isArray(s.enum)) return "enum";
  const t = Array.isArray(s.type) ? s.type.find((x) => x !== "null") : s.type;
  return ["string", "integer", "number", "boolean", "array", "object"].includes(t) ? t : "json";
}

export function createParameterForm(deployment, onSubmit) {
  const root = deployment.parameter_openapi_schema || {};
  const props = root.properties || {};
  const required = new Set(root.required || []);
  const defaults = deployment.parameters || {};
  const fields = [];
  const banner = h("div", { class: "form-banner" });

  for (const [name, raw] of Object.entries(props)) {
    const s = resolve(raw, root);
    const kind = kindOf(s);
    const has = Object.prototype.hasOwnProperty.call(defaults, name);
    const initial = has ? defaults[name] : s.default;
    const id = `param-${name}`;
    let input;
    if (kind === "boolean") {
      input = h("select", { id, name }, h("option", { value: "", selected: initial === undefined || initial === null },
        "—"), h("option", { value: "true", selected: initial === true }, "true"),
      h("option", { value: "false", selected: initial === false }, "false"));
    } else if (kind === "enum") {
      input = h("select", { id, name }, h("option", { value: "" }, "—"),
        s.enum.map((v, i) => h("option", { value: String(i), selected: initial === v }, String(v))));
    } else if (kind === "array" || kind === "object" || kind === "json") {
      input = h("textarea", { id, name, rows: 2, placeholder: kind === "array" ? "[1, 2, 3]" : '{"key": "value"}' });
      if (initial !== undefined && initial !== null) input.value = JSON.stringify(initial);
    } else {
      input = h("input", { id, name, type: kind === "string" ? "text" : "number",
        step: kind === "integer" ? "1" : "any", inputmode: kind === "string" ? null : "decimal" });
      if (kind !== "string") input.type = "text"; // keep what the user typed, even when it is not a number
      if (initial !== undefined && initial !== null) input.value = String(initial);
    }
    const error = h("div", { class: "field-error", id: `${id}-error`, role: "alert", "aria-live": "polite" });
    const typeHint = kind === "enum" ? "one of" : kind;
    const wrap = h("div", { class: "field", "data-field": name },
      h("label", { for: id }, `${s.title || name}${required.has(name) && initial === undefined ? " *" : ""}`,
        h("span", { class: "hint" }, ` ${typeHint}${s.nullable ? " or null" : ""}`)),
      input, s.description ? h("div", { class: "hint" }, s.description) : null, error);
    input.setAttribute("aria-describedby", `${id}-error`);
    fields.push({ name, s, kind, input, error, wrap, required: required.has(name) });
  }

  function setError(name, message) {
    const f = fields.find((x) => x.name === name);
    if (!f) return false;
    f.wrap.classList.add("invalid");
    f.error.textContent = message;
    f.input.setAttribute("aria-invalid", "true");
    return true;
  }

  function clearErrors() {
    banner.replaceChildren();
    for (const f of fields) {
      f.wrap.classList.remove("invalid");
      f.error.textContent = "";
      f.input.removeAttribute("aria-invalid");
    }
  }

  // Value of a field, an Invalid, or undefined when left empty.
  function read(f) {
    const text = f.input.value.trim();
    if (text === "") return undefined;
    if (text === "null" && f.s.nullable) return null;
    switch (f.kind) {
      case "boolean": return text === "true";
      case "enum": return f.s.enum[Number(text)];
      case "integer": {
        const n = Number(text);
        if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(n)) return new Invalid("must be a whole number");
        return checkRange(f.s, n);
      }
      case "number": {
        const n = Number(text);
        if (!Number.isFinite(n)) return new Invalid("must be a number");
        return checkRange(f.s, n);
      }
      case "string": {
        if (f.s.minLength !== undefined && text.length < f.s.minLength) {
          return new Invalid(`must be at least ${f.s.minLength} characters`);
        }
        if (f.s.maxLength !== undefined && f.input.value.length > f.s.maxLength) {
          return new Invalid(`must be at most ${f.s.maxLength} characters`);
        }
        return f.input.value;
      }
      default: {
        let value;
        try {
          value = JSON.parse(text);
        } catch (err) {
          return new Invalid(`not valid JSON (${err.message})`);
        }
        if (f.kind === "array" && !Array.isArray(value)) return new Invalid("must be a JSON array, like [1, 2]");
        if (f.kind === "object" && (value === null || typeof value !== "object" || Array.isArray(value))) {
          return new Invalid('must be a JSON object, like {"a": 1}');
        }
        return value;
      }
    }
  }

  function checkRange(s, n) {
    if (s.minimum !== undefined && n < s.minimum) return new Invalid(`must be ≥ ${s.minimum}`);
    if (s.maximum !== undefined && n > s.maximum) return new Invalid(`must be ≤ ${s.maximum}`);
    if (s.exclusiveMinimum !== undefined && n <= s.exclusiveMinimum) return new Invalid(`must be > ${s.exclusiveMinimum}`);
    if (s.exclusiveMaximum !== undefined && n >= s.exclusiveMaximum) return new Invalid(`must be < ${s.exclusiveMaximum}`);
    return n;
  }

  // Show the API's 422 errors ([{loc: "parameters.x", msg}]) by their field; the rest in the banner.
  function showApiError(err) {
    const list = err.body && Array.isArray(err.body.errors) ? err.body.errors : [];
    const unplaced = [];
    for (const e of list) {
      const path = String(e.loc || "").split(".").filter((p) => p !== "body");
      const name = path[0] === "parameters" ? path[1] : null;
      if (!name || !setError(name, `${e.msg}${path.length > 2 ? ` (at ${path.slice(2).join(".")})` : ""}`)) {
        unplaced.push(`${e.loc}: ${e.msg}`);
      }
    }
    if (!list.length || unplaced.length) {
      banner.replaceChildren(h("div", { class: "banner banner-error", role: "alert" }, h("strong", {}, "Error "),
        `HTTP ${err.status}: ${unplaced.length ? unplaced.join("; ") : err.message}`));
    }
  }

  const nameInput = h("input", { type: "text", id: "run-name-input", placeholder: "generated when empty" });
  const submit = h("button", { type: "submit", class: "btn primary", id: "run-submit" }, "Run");
  const form = h("form", { id: "run-form", novalidate: true },
    banner,
    fields.length ? h("div", { class: "form-grid" }, fields.map((f) => f.wrap))
      : h("p", { class: "muted" }, "This deployment takes no parameters."),
    h("div", { class: "form-grid", style: { marginTop: "14px" } },
      h("div", { class: "field" }, h("label", { for: "run-name-input" }, "Run name"), nameInput)),
    h("div", { class: "form-actions" }, submit));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const parameters = {};
    let bad = 0;
    for (const f of fields) {
      const value = read(f);
      if (value instanceof Invalid) {
        setError(f.name, value.message);
        bad += 1;
      } else if (value === undefined) {
        if (f.required && !Object.prototype.hasOwnProperty.call(defaults, f.name) && f.s.default === undefined) {
          setError(f.name, "required");
          bad += 1;
        }
      } else {
        parameters[f.name] = value;
      }
    }
    if (bad) {
      const first = fields.find((f) => f.wrap.classList.contains("invalid"));
      if (first) first.input.focus();
      return;
    }
    submit.disabled = true;
    try {
      await onSubmit({ parameters, name: nameInput.value.trim() || undefined });
    } catch (err) {
      showApiError(err);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
