// The "Exact Online" page inside Airflow's UI: an Airflow 3 React app plugin (route /plugin/exactonline).
//
// A plain ES module, no build step. It uses the React that Airflow's UI shares with plugin bundles on
// globalThis (React, ReactRouterDOM), and hands its component to Airflow as globalThis.AirflowPlugin.
// It is rendered in Airflow's main window, so the Connect link can take the whole tab to Exact's login
// page (an iframe external view is sandboxed without allow-top-navigation).
//
// The page itself is drawn by the provider's FastAPI app (plugins/app.py): this component fetches the
// matching URL under exactonline/ with the X-ExactOnline-Embed header and shows the HTML fragment it
// returns (escaped by the server's templates). Links to other Airflow pages navigate inside the UI.
const React = globalThis.React;
const Router = globalThis.ReactRouterDOM;
const ROUTE = "/plugin/exactonline";
const APP = "exactonline";

function basePath() {
  return new URL(document.baseURI).pathname.replace(/\/?$/, "/");
}

function useCurrentLocation() {
  if (Router && typeof Router.useLocation === "function") {
    return Router.useLocation();
  }
  return { pathname: window.location.pathname, search: window.location.search };
}

// The provider page matching this route, or null when the route would resolve outside the provider's app
// (e.g. a crafted link with "%2e%2e" segments): only its own fragments are ever shown as HTML.
function sourceUrl(location) {
  const at = location.pathname.indexOf(ROUTE);
  let rest = at >= 0 ? location.pathname.slice(at + ROUTE.length) : "/";
  if (!rest.startsWith("/")) {
    rest = "/" + rest;
  }
  const url = new URL(APP + rest + (location.search || ""), document.baseURI);
  return url.pathname.startsWith(basePath() + APP + "/") ? url.href : null;
}

// A same-origin link into Airflow's UI (not into the provider's app or the API): navigate without a reload.
function spaPath(anchor) {
  if (!anchor || anchor.target || anchor.hasAttribute("download")) {
    return null;
  }
  const url = new URL(anchor.href, document.baseURI);
  const base = basePath();
  if (url.origin !== window.location.origin || !url.pathname.startsWith(base)) {
    return null;
  }
  const inner = url.pathname.slice(base.length);
  if (inner.startsWith(APP + "/") || inner === APP || inner.startsWith("api/")) {
    return null;
  }
  return "/" + inner + url.search + url.hash;
}

function ExactOnlinePage() {
  const location = useCurrentLocation();
  const navigate = Router && typeof Router.useNavigate === "function" ? Router.useNavigate() : null;
  const url = sourceUrl(location);
  const [view, setView] = React.useState({ url: null, html: "", failed: null });

  React.useEffect(() => {
    if (url === null) {
      setView({ url, html: "", failed: "this address is not an Exact Online page" });
      return undefined;
    }
    const controller = new AbortController();
    fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "text/html", "X-ExactOnline-Embed": "1" },
      signal: controller.signal,
    })
      .then((response) => {
        // Show HTML only if the provider's app drew it as a fragment for this page.
        if (response.headers.get("X-ExactOnline-Fragment") !== "1") {
          throw new Error("unexpected answer (HTTP " + response.status + ")");
        }
        return response.text();
      })
      .then((html) => setView({ url, html, failed: null }))
      .catch((error) => {
        if (error.name !== "AbortError") {
          setView({ url, html: "", failed: String(error) });
        }
      });
    return () => controller.abort();
  }, [url]);

  const onClick = (event) => {
    if (!navigate || event.defaultPrevented || event.button !== 0) {
      return;
    }
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
      return;
    }
    const path = spaPath(event.target.closest ? event.target.closest("a[href]") : null);
    if (path !== null) {
      event.preventDefault();
      navigate(path);
    }
  };

  const frame = { height: "100%", overflow: "auto", padding: "1rem 1.5rem" };
  if (view.failed && view.url === url) {
    return React.createElement(
      "div",
      { role: "alert", style: frame },
      "Could not load the Exact Online page: " + view.failed,
    );
  }
  if (view.url !== url) {
    return React.createElement("div", { "aria-busy": "true", style: frame }, "Loading Exact Online connections...");
  }
  return React.createElement("div", {
    className: "exactonline-plugin",
    "data-source": url,
    dangerouslySetInnerHTML: { __html: view.html },
    onClick,
    style: frame,
  });
}

globalThis.AirflowPlugin = ExactOnlinePage;
export default ExactOnlinePage;
