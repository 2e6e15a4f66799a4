// LACE's Vega front end. vl-convert bundles this snippet with Vega, Vega-Lite and Vega-Embed
// (no imports: `vegaEmbed` is in scope), so the charts need no network anywhere.
//
// Two uses of one bundle:
// - as the module of an anywidget (`export default { render }`): the live chart in JupyterLab.
//   A new spec is drawn into a hidden box beside the old chart and swapped in when its first
//   frame is ready, so a redraw never blanks; the selections named in `keep` carry over to the
//   new chart; the selections named in `report` are sent back to Python.
// - as a page module in a static report (window.LACE_PAGE set before it loads): every
//   `.lace-vega` element is drawn from the JSON spec it holds.

const EMBED_OPTIONS = { actions: false, renderer: "svg" };

function showError(el, error) {
  const box = document.createElement("pre");
  box.className = "lace-chart-error";
  box.style.color = "#b00020";
  box.textContent = "chart error: " + (error && error.message ? error.message : String(error));
  el.appendChild(box);
}

function plain(value) {
  // Vega's signal values may hold non-JSON bits (functions, symbols): keep what JSON keeps.
  return JSON.parse(JSON.stringify(value ?? null));
}

function carrySelections(from, to, names) {
  for (const name of names) {
    let store;
    try {
      store = from.data(name + "_store");
    } catch (e) {
      continue; // this chart has no such selection
    }
    if (!store || store.length === 0) continue;
    try {
      to.data(name + "_store", store.map((t) => ({ ...t })));
    } catch (e) {
      // the new chart lacks it: nothing to carry
    }
  }
}

async function render({ model, el }) {
  el.classList.add("lace-chart");
  el.style.position = "relative";
  let current = null; // { api, box }
  let seq = 0;

  const listen = (api) => {
    for (const name of model.get("report") ?? []) {
      let timer = null;
      const send = () => {
        const all = { ...(model.get("selection") ?? {}) };
        all[name] = plain(api.view.signal(name));
        model.set("selection", all);
        model.save_changes();
      };
      try {
        api.view.addSignalListener(name, () => {
          clearTimeout(timer);
          timer = setTimeout(send, 30);
        });
      } catch (e) {
        // the chart has no such selection
      }
    }
  };

  const draw = async () => {
    const mine = ++seq;
    const started = performance.now();
    const spec = structuredClone(model.get("spec"));
    const box = document.createElement("div");
    box.className = "lace-chart-box";
    if (current) {
      box.style.position = "absolute";
      box.style.left = "0";
      box.style.top = "0";
      box.style.visibility = "hidden";
    }
    el.appendChild(box);
    let api;
    try {
      api = await vegaEmbed(box, spec, EMBED_OPTIONS);
    } catch (error) {
      box.remove();
      showError(el, error);
      return;
    }
    if (mine !== seq) {
      api.finalize();
      box.remove();
      return; // a newer spec arrived meanwhile: it will be drawn instead
    }
    if (current) {
      carrySelections(current.api.view, api.view, model.get("keep") ?? []);
      await api.view.runAsync();
      current.api.finalize();
      current.box.remove();
      box.style.position = "";
      box.style.visibility = "";
    }
    current = { api, box };
    listen(api);
    // for tests and the curious: how many draws, when the last one showed, how long it took
    el.dataset.renders = String(Number(el.dataset.renders ?? 0) + 1);
    el.dataset.shownAt = String(performance.now());
    el.dataset.drawMs = String(Math.round(performance.now() - started));
  };

  model.on("change:spec", draw);
  await draw();
  return () => {
    if (current) current.api.finalize();
  };
}

async function drawPage(root) {
  for (const el of root.querySelectorAll(".lace-vega:not([data-drawn])")) {
    el.dataset.drawn = "1";
    const holder = el.querySelector("script[type='application/json']");
    if (!holder) continue;
    const box = document.createElement("div");
    el.appendChild(box);
    try {
      await vegaEmbed(box, JSON.parse(holder.textContent), EMBED_OPTIONS);
    } catch (error) {
      showError(el, error);
    }
  }
}

if (typeof window !== "undefined" && window.LACE_PAGE) {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => drawPage(document));
  } else {
    drawPage(document);
  }
}

export default { render };
