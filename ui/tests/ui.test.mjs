// The dashboard in a real browser (Debian's chromium through playwright-core) against the real
// gateway and capsemd with a real VM: create from the dialog, the terminal (echo hi, resize),
// upload a file and read it back from the guest, a blocked request in the HTTP tab with its
// rule, paging a long ledger by keyset cursors (older, oldest, newer, newest), charts, policy
// check, settings, stop and delete from the dashboard; axe-core on every view (no serious or
// critical violation); a screenshot of each view in $ARTIFACTS; the keystroke-to-echo latency
// of the terminal protocol from inside the page (bench JSON).
//   node tests/ui.test.mjs 'http://127.0.0.1:PORT/#token=...'
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const url = process.argv[2];
const out = process.env.ARTIFACTS || "artifacts";
const vmName = process.env.UI_VM || "uitest";
mkdirSync(out, { recursive: true });
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const origin = new URL(url).origin;
const token = new URL(url).hash.match(/token=(\w+)/)[1];
let failures = 0;

function log(...a) { console.log(new Date().toISOString().slice(11, 23), ...a); }
async function step(name, fn) {
  if (failures) { log("skipped:", name); return; } // the steps build on each other
  log("step:", name);
  try { await fn(); log("  ok"); }
  catch (e) { failures++; log("  FAILED:", e.stack || e); await shot(page, "failed").catch(() => {}); }
}
async function shot(page, name) { await page.screenshot({ path: `${out}/${name}.png` }); }
async function axe(page, view) {
  await page.addScriptTag({ content: axeSource });
  const r = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = r.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  writeFileSync(`${out}/axe-${view}.json`, JSON.stringify(r.violations, null, 1));
  if (bad.length) throw new Error(`axe (${view}): ` + bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target).join(", ")})`).join("; "));
}
async function api(path, opts = {}) {
  const r = await fetch(origin + "/api" + path, { ...opts, headers: { Authorization: `Bearer ${token}`, ...(opts.headers || {}) } });
  return r;
}
async function termText(page) {
  return page.evaluate(() => [...document.querySelectorAll(".xterm-rows > div")].map((d) => d.textContent).join("\n"));
}
async function typeCmd(page, cmd) {
  await page.locator(".xterm-helper-textarea").focus();
  await page.keyboard.type(cmd);
  await page.keyboard.press("Enter");
}
async function waitTerm(page, re, timeout = 60000) {
  await page.waitForFunction((src) => {
    const t = [...document.querySelectorAll(".xterm-rows > div")].map((d) => d.textContent).join("\n");
    return new RegExp(src, "m").test(t);
  }, re.source, { timeout, polling: 100 });
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
// bypassCSP: only so that axe-core can be injected; the app itself runs under the gateway's CSP
const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "light", bypassCSP: true });
const page = await ctx.newPage();
page.on("console", (m) => m.type() === "error" && log("console:", m.text()));
page.on("pageerror", (e) => { failures++; log("page error:", e.message); });

await step("dashboard loads (token from the URL fragment)", async () => {
  await page.goto(url);
  await page.getByRole("heading", { name: "Sandboxes" }).waitFor();
  if (page.url().includes("token=")) throw new Error("the token stayed in the address bar");
  await shot(page, "01-dashboard-empty");
  await axe(page, "dashboard");
});

await step("create a VM from the dialog", async () => {
  await page.getByRole("button", { name: "New sandbox" }).click();
  const dlg = page.getByRole("dialog", { name: "New sandbox" });
  await dlg.getByLabel("Name").fill(vmName);
  await dlg.getByLabel("Memory").fill("256M");
  await shot(page, "02-create-dialog");
  await axe(page, "create-dialog");
  await dlg.getByRole("button", { name: "Create" }).click();
  await page.locator(`tr[data-vm="${vmName}"] .badge.s-running`).waitFor({ timeout: 300000 });
  await shot(page, "03-dashboard-running");
});

await step("terminal: echo hi", async () => {
  await page.getByRole("link", { name: vmName }).click();
  await page.locator(".xterm-rows").waitFor();
  await page.getByText("connected", { exact: false }).first().waitFor();
  await waitTerm(page, /[#$]\s*$/, 60000);
  await typeCmd(page, "echo hi");
  await waitTerm(page, /^hi\s*$/);
  await shot(page, "04-terminal");
  await axe(page, "terminal");
});

await step("terminal: resize", async () => {
  await typeCmd(page, "stty size");
  await waitTerm(page, /^\d+ \d+\s*$/);
  const before = (await termText(page)).match(/^(\d+ \d+)\s*$/m)[1];
  await page.setViewportSize({ width: 1000, height: 700 });
  await page.waitForTimeout(500);
  await typeCmd(page, "clear; stty size");
  await page.waitForFunction((b) => {
    const t = [...document.querySelectorAll(".xterm-rows > div")].map((d) => d.textContent).join("\n");
    const m = t.match(/^(\d+ \d+)\s*$/m);
    return m && m[1] !== b;
  }, before, { timeout: 30000 });
  const after = (await termText(page)).match(/^(\d+ \d+)\s*$/m)[1];
  log(`  stty size ${before} -> ${after}`);
  await page.setViewportSize({ width: 1280, height: 800 });
});

await step("a blocked request made in the VM", async () => {
  await typeCmd(page, "clear; (wget -q -T 5 -O- http://93.184.216.34/ || nc -w 5 93.184.216.34 80 </dev/null) >/dev/null 2>&1; echo req=done");
  await waitTerm(page, /^req=done\s*$/, 60000);
});

await step("files: upload, see it in the guest, view it", async () => {
  await page.getByRole("tab", { name: "Files" }).click();
  const content = "print('hello from the browser')\n";
  await page.getByTestId("upload").setInputFiles({ name: "hello.py", mimeType: "text/x-python", buffer: Buffer.from(content) });
  await page.getByText("uploaded hello.py").waitFor({ timeout: 60000 });
  const r = await api(`/vms/${vmName}/files?path=${encodeURIComponent("/root/workspace/hello.py")}`);
  const got = await r.text();
  if (got !== content) throw new Error(`the guest has ${JSON.stringify(got)}`);
  await page.getByRole("button", { name: "hello.py", exact: true }).click();
  await page.locator(".viewer .hljs").waitFor();
  await shot(page, "05-files");
  await axe(page, "files");
});

await step("the HTTP tab shows the blocked request with its rule", async () => {
  await page.getByRole("tab", { name: "Activity" }).click();
  await page.getByRole("button", { name: "HTTP" }).click();
  const row = page.locator("tr[data-kind=net]", { hasText: "direct-ip" }).first();
  await row.waitFor({ timeout: 60000 });
  if (!(await row.textContent()).includes("block")) throw new Error("not shown as blocked");
  await row.getByRole("button", { name: /Details/ }).click();
  await page.getByRole("complementary", { name: "Row details" }).waitFor();
  await shot(page, "06-activity-http");
  await axe(page, "activity");
  await page.getByRole("button", { name: "Close" }).click();
  await page.getByRole("button", { name: "Commands" }).click();
  await page.locator("tr[data-kind=exec]").first().waitFor({ timeout: 30000 });
  await shot(page, "07-activity-commands");
});

await step("a model call appears with its tokens and cost", async () => {
  const m = process.env.UI_MODEL_VM;
  if (!m) throw new Error("UI_MODEL_VM is not set: test_webui.py makes the call");
  await page.goto(`${origin}/#/vm/${m}/activity`);
  await page.getByRole("button", { name: "Model calls" }).click();
  const row = page.locator("tr[data-kind=model_call]", { hasText: "anthropic" }).first();
  await row.waitFor({ timeout: 60000 });
  const text = await row.textContent();
  const rows = await (await api(`/vms/${m}/activity?kind=model_call`)).json();
  const r0 = rows.rows[0];
  if (!r0 || !(r0.input_tokens > 0) || !(r0.output_tokens > 0) || !(r0.cost_usd > 0))
    throw new Error(`no tokens or cost in ${JSON.stringify(r0)}`);
  if (!text.includes(String(r0.input_tokens)) || !text.includes(String(r0.output_tokens)))
    throw new Error(`the row does not show the tokens: ${text}`);
  await shot(page, "06b-activity-model");
  await axe(page, "activity-model");
});

await step("activity pages: older, oldest, newer, newest by their cursors", async () => {
  // test_webui.py put UI_PAGE_ROWS blocked requests in this VM's ledger: three pages and more
  const m = process.env.UI_MODEL_VM, seeded = Number(process.env.UI_PAGE_ROWS || 0);
  if (seeded < 101) throw new Error("UI_PAGE_ROWS is not set: test_webui.py writes the rows");
  const asked = [];
  const onReq = (r) => r.url().includes("/activity?") && asked.push(new URL(r.url()).searchParams);
  page.on("request", onReq);
  await page.goto(`${origin}/#/vm/${m}/activity`);
  await page.getByRole("button", { name: "HTTP" }).click();
  const pager = page.getByRole("navigation", { name: "Pages" });
  const shown = pager.locator("span");
  await shown.getByText(/^1–50 of \d+$/).waitFor({ timeout: 60000 });
  const total = Number((await shown.textContent()).match(/of (\d+)/)[1]);
  if (total < seeded) throw new Error(`${total} rows, ${seeded} written`);
  const ids = () => page.locator("tr[data-kind=net] td button").evaluateAll(
    (bs) => bs.map((b) => Number(b.getAttribute("aria-label").match(/\d+$/)[0])));
  const descending = (a) => a.every((x, i) => i === 0 || x < a[i - 1]);
  // the pager's label changes with the request, the rows when its answer is drawn: wait for them
  const settled = async (ok) => {
    for (let i = 0; i < 100; i++) {
      const v = await ids();
      if (ok(v)) return v;
      await page.waitForTimeout(100);
    }
    return ids();
  };
  const p1 = await settled((v) => v.length === 50);
  if (p1.length !== 50 || !descending(p1)) throw new Error(`newest page: ${p1}`);
  if (!(await pager.getByRole("button", { name: "Newer" }).isDisabled())) throw new Error("Newer on the newest page");
  await pager.getByRole("button", { name: "Older" }).click();
  await shown.getByText(new RegExp(`^51–100 of ${total}$`)).waitFor();
  const p2 = await settled((v) => v.length === 50 && v[0] < p1[49]);
  if (p2.length !== 50 || !descending(p2) || p2[0] >= p1[49]) throw new Error(`second page ${p2} after ${p1}`);
  await pager.getByRole("button", { name: "Oldest" }).click();
  await shown.getByText(new RegExp(`^${total - 49}–${total} of ${total}$`)).waitFor();
  const last = await settled((v) => v.length > 0 && v[0] < p2[49]);
  if (!(await pager.getByRole("button", { name: "Older" }).isDisabled())) throw new Error("Older on the oldest page");
  await pager.scrollIntoViewIfNeeded();
  await shot(page, "06c-activity-oldest");
  await axe(page, "activity-pages");
  await pager.getByRole("button", { name: "Newer" }).click();
  await shown.getByText(new RegExp(`^${total - 99}–${total - 50} of ${total}$`)).waitFor();
  const above = await settled((v) => v.length === 50 && v[49] > last[0]);
  if (above.length !== 50 || above[49] <= last[0]) throw new Error(`newer page ${above} above ${last}`);
  await pager.getByRole("button", { name: "Newest" }).click();
  await shown.getByText(new RegExp(`^1–50 of ${total}$`)).waitFor();
  const again = await settled((v) => v.length === 50 && v[0] === p1[0]);
  if (again[0] !== p1[0]) throw new Error(`Newest is not the first page again: ${again} after ${p1}`);
  page.off("request", onReq);
  // keyset paging: the pager sends cursors, never an offset
  if (!asked.some((q) => q.has("before")) || !asked.some((q) => q.has("after")) || asked.some((q) => q.has("offset")))
    throw new Error(`the pages asked: ${asked.map((q) => q.toString()).join(" ")}`);
  await page.goto(`${origin}/#/vm/${vmName}/activity`);
});

await step("charts", async () => {
  await page.getByRole("tab", { name: "Charts" }).click();
  await page.getByText("Requests allowed / blocked").waitFor();
  await page.waitForTimeout(300);
  await shot(page, "08-charts");
  await axe(page, "charts");
});

await step("keystroke-to-echo latency through the gateway's terminal socket", async () => {
  const res = await page.evaluate(async ({ vm, tok, n }) => {
    const id = (await (await fetch(`/api/vms/${vm}`, { headers: { Authorization: `Bearer ${tok}` } })).json()).id;
    // a second shell would be a new exec; this measures the same path as the page's terminal
    const ws = new WebSocket(`ws://${location.host}/terminal/${id}?token=${tok}`);
    ws.binaryType = "arraybuffer";
    await new Promise((r) => (ws.onopen = r));
    let waiting = null;
    ws.onmessage = (e) => { if (waiting && typeof e.data !== "string") { const t = new TextDecoder().decode(e.data); if (t.includes(waiting.c)) { const w = waiting; waiting = null; w.done(); } } };
    await new Promise((r) => setTimeout(r, 500));
    const lat = [];
    const enc = new TextEncoder();
    for (let i = 0; i < n; i++) {
      const c = "abcdefghijklmnopqrstuvwxyz"[i % 26];
      const t0 = performance.now();
      await new Promise((done) => { waiting = { c, done }; ws.send(enc.encode(c)); });
      lat.push(performance.now() - t0);
    }
    ws.send(enc.encode("\x15")); // ^U: clear the line
    ws.close();
    lat.sort((a, b) => a - b);
    return { n, p50_ms: lat[Math.floor(n * 0.5)], p99_ms: lat[Math.min(n - 1, Math.floor(n * 0.99))] };
  }, { vm: vmName, tok: token, n: Number(process.env.LAT_N || 200) });
  log("  browser terminal latency", JSON.stringify(res));
  writeFileSync(`${out}/latency-browser.json`, JSON.stringify(res));
});

await step("policy view and the check form", async () => {
  await page.getByRole("link", { name: "Policy" }).click();
  await page.getByRole("heading", { name: "Egress policy" }).waitFor();
  await page.getByLabel("URL").fill("https://93.184.216.34/");
  await page.getByRole("button", { name: "Would this be allowed?" }).click();
  await page.getByRole("status").getByText("Blocked").waitFor();
  await shot(page, "09-policy");
  await axe(page, "policy");
});

await step("settings", async () => {
  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByRole("heading", { name: "Provider keys" }).waitFor();
  await page.getByRole("table", { name: "Images" }).getByText("minimal").first().waitFor();
  await shot(page, "10-settings");
  await axe(page, "settings");
});

await step("dark theme", async () => {
  await page.getByLabel("Theme").selectOption("dark");
  await page.getByRole("link", { name: "Dashboard" }).click();
  await page.getByRole("heading", { name: "Sandboxes" }).waitFor();
  await shot(page, "11-dashboard-dark");
  await axe(page, "dashboard-dark");
  await page.getByLabel("Theme").selectOption("light");
});

await step("fork a running sandbox into an image", async () => {
  await page.getByRole("button", { name: `Fork ${vmName}` }).click();
  const dlg = page.getByRole("dialog", { name: `Fork ${vmName}` });
  await dlg.getByLabel("Image name").fill(`${vmName}-img`);
  await dlg.getByLabel("Description").fill("from the dashboard");
  await axe(page, "fork-dialog");
  await dlg.getByRole("button", { name: "Fork" }).click();
  await dlg.waitFor({ state: "detached", timeout: 120000 });
  const imgs = await (await api("/images")).json();
  const im = imgs.find((i) => i.name === `${vmName}-img`);
  if (!im || im.description !== "from the dashboard") throw new Error(`no fork image: ${JSON.stringify(imgs)}`);
});

await step("a suspendable sandbox: suspend and resume from the dashboard", async () => {
  const s = `${vmName}-s`;
  await page.getByRole("button", { name: "New sandbox" }).click();
  const dlg = page.getByRole("dialog", { name: "New sandbox" });
  await dlg.getByLabel("Name").fill(s);
  await dlg.getByLabel("Memory").fill("256M");
  await dlg.getByLabel(/Suspendable/).check();
  await dlg.getByRole("button", { name: "Create" }).click();
  await page.locator(`tr[data-vm="${s}"] .badge.s-running`).waitFor({ timeout: 300000 });
  await page.getByRole("button", { name: `Suspend ${s}` }).click();
  await page.locator(`tr[data-vm="${s}"] .badge.s-suspended`).waitFor({ timeout: 120000 });
  await shot(page, "12-dashboard-suspended");
  await axe(page, "dashboard-suspended");
  const info = await (await api(`/vms/${s}`)).json();
  if (info.state !== "suspended" || info.host_memory !== null) throw new Error(`not suspended: ${JSON.stringify(info)}`);
  await page.getByRole("button", { name: `Resume ${s}` }).click();
  await page.locator(`tr[data-vm="${s}"] .badge.s-running`).waitFor({ timeout: 120000 });
  await page.getByRole("button", { name: `Delete ${s}` }).click();
  await page.getByRole("dialog", { name: `Delete ${s}?` }).getByRole("button", { name: "Delete" }).click();
  await page.locator(`tr[data-vm="${s}"]`).waitFor({ state: "detached", timeout: 120000 });
});

await step("stop and delete from the dashboard", async () => {
  await page.getByRole("button", { name: `Stop ${vmName}` }).click();
  await page.locator(`tr[data-vm="${vmName}"] .badge.s-stopped`).waitFor({ timeout: 120000 });
  await page.getByRole("button", { name: `Delete ${vmName}` }).click();
  await page.getByRole("dialog", { name: `Delete ${vmName}?` }).getByRole("button", { name: "Delete" }).click();
  await page.locator(`tr[data-vm="${vmName}"]`).waitFor({ state: "detached", timeout: 120000 });
  await shot(page, "13-dashboard-after-delete");
  await api(`/images/${vmName}-img`, { method: "DELETE" });
});

await api(`/vms/${process.env.UI_MODEL_VM || "uimodel"}`, { method: "DELETE" }).catch(() => {});
if (failures) { // leave nothing behind
  await api(`/vms/${vmName}`, { method: "DELETE" }).catch(() => {});
  await api(`/vms/${vmName}-s`, { method: "DELETE" }).catch(() => {});
  await api(`/images/${vmName}-img`, { method: "DELETE" }).catch(() => {});
}
await browser.close();
log(failures ? `${failures} step(s) failed` : "all steps passed");
process.exit(failures ? 1 : 0);
