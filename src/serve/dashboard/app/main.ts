/// <reference lib="dom" />
/**
 * The dashboard's shell: sign-in, the navigation, and which view the hash route shows. The token
 * lives in sessionStorage for this tab only (api.ts); signing out or a refused token forgets it.
 */
import { html, render } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, currentToken, onSignOut, signIn, signOut } from "./api.ts";
import { FleetView } from "./fleet.ts";
import { ImageView } from "./image.ts";
import { JobView } from "./job.ts";
import { RulesView } from "./rules.ts";
import { useRoute } from "./ui.ts";

function SignIn({ onDone }: { onDone: () => void }) {
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: SubmitEvent) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const input = form.elements.namedItem("token") as HTMLInputElement;
    setBusy(true);
    setError(undefined);
    try {
      await signIn(input.value.trim());
      input.value = "";
      onDone();
    } catch (err) {
      setError(
        err instanceof ApiError && err.code === "UNAUTHORIZED"
          ? "The service refused this token. Use the token of suture serve's --token-file (or SUTURE_TOKEN)."
          : `Cannot reach the service: ${(err as Error).message}`,
      );
      input.select();
    } finally {
      setBusy(false);
    }
  };
  return html`
    <main id="main">
      <h1>Sign in to suture</h1>
      <form class="card" onSubmit=${submit} aria-describedby="signin-hint">
        <div class="field">
          <label for="token">API token</label>
          <input id="token" name="token" type="password" autocomplete="off" required minlength="16" autofocus />
          <span id="signin-hint" class="hint">
            Kept in this browser tab only (sessionStorage) and sent as a bearer token to the API.
          </span>
        </div>
        <div role="alert">${error ?? ""}</div>
        <button class="primary" type="submit" disabled=${busy}>Sign in</button>
      </form>
    </main>
  `;
}

const SECTIONS = [
  { name: "fleet", label: "Fleet" },
  { name: "rules", label: "Rules" },
];

function Shell() {
  const route = useRoute();
  const [view, arg] = route;
  const section = view === "rules" ? "rules" : "fleet";
  const heading = useRef<HTMLElement>(null);
  // A new view moves the focus to its heading, so keyboard and screen reader users start there.
  useEffect(() => {
    heading.current?.querySelector("h1")?.focus();
  }, [route.join("/")]);
  let content: unknown;
  if (view === "image" && arg) content = html`<${ImageView} repository=${arg} />`;
  else if (view === "job" && arg) content = html`<${JobView} id=${arg} />`;
  else if (view === "rules") content = html`<${RulesView} />`;
  else content = html`<${FleetView} />`;
  return html`
    <header>
      <span class="brand">suture</span>
      <nav aria-label="Sections">
        <ul>
          ${SECTIONS.map(
            (s) =>
              html`<li><a href=${`#/${s.name}`} aria-current=${s.name === section ? "page" : undefined}>${s.label}</a></li>`,
          )}
        </ul>
      </nav>
      <button class="signout" type="button" onClick=${signOut}>Sign out</button>
    </header>
    <main id="main" ref=${heading}>${content}</main>
  `;
}

function App() {
  const [signedIn, setSignedIn] = useState(() => currentToken() !== undefined);
  useEffect(() => onSignOut(() => setSignedIn(false)), []);
  return signedIn ? html`<${Shell} />` : html`<${SignIn} onDone=${() => setSignedIn(true)} />`;
}

render(html`<${App} />`, document.getElementById("app")!);
