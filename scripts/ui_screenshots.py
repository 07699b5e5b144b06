"""Screenshots of the MLflow UI for the README, taken in headless Chromium through the DevTools protocol.

    python scripts/ui_screenshots.py --url http://127.0.0.1:5000 --experiment tc --out docs/img

Needs a running `mlflow server`/`mlflow ui` whose experiment holds analyzed tc runs (e.g. the digits sweep of
the README). It saves a *shared view* (the UI's own "share" mechanism: an experiment tag
`mlflow.sharedViewState.<key>` holding the view as JSON) with the tc and accuracy columns, opens it, and
captures `runs_table.png`; then the compare page of the finished training runs (`compare_runs.png`, with its
parallel-coordinates plot). The UI's assistant panel and first-visit pop-ups are dismissed via localStorage.

The README's screenshot of the quick start's three runs (training, analyze, quick start), all runs shown:

    python scripts/ui_screenshots.py --url http://127.0.0.1:5055 --experiment tc --out docs/img --only runs \
        --name quickstart_runs.png --filter "" --params epochs,train_size,width,seed,max_samples --height 700
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from mlflow.tracking import MlflowClient

COLUMNS = ("tc_kappa_test", "tc_test", "tc_full_test", "test_acc", "acc_train")
PARAMS = ("lr", "batch_size", "weight_decay", "width", "label_noise")


class Browser:
    def __init__(self, width: int, height: int):
        self.tmp = tempfile.TemporaryDirectory(prefix="tc-chromium-", ignore_cleanup_errors=True)
        self.proc = subprocess.Popen(
            [
                "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.tmp.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.tmp.name) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list").read())
        self.ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self.n = 0

    async def __aenter__(self):
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.ws_url, max_msg_size=0)
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.tmp.cleanup()

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return r.get("result", {}).get("value")

    async def goto(self, url: str, settle: float):
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(settle)

    async def shot(self, path: Path):
        data = (await self.call("Page.captureScreenshot", format="png"))["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"wrote {path}")


QUIET = """
for (const k of ['mlflow.assistant.panelOpen', 'mlflow.assistant.panelOpen_v1']) localStorage.setItem(k, 'false');
for (const k of ['mlflow.assistant.fab.autoOpenedOnFirstLoad', 'mlflow.assistant.fab.autoOpenedOnFirstLoad_v1'])
  localStorage.setItem(k, 'true');
Object.keys(localStorage).length
"""
CLEAR_ALL = "Array.from(document.querySelectorAll('button')).filter(b => b.innerText.trim() === 'Clear All')[0].click()"
PICK = """(() => {
  const want = %s;
  const opt = Array.from(document.querySelectorAll('.ant-select-item-option, [role=option]'))
    .find(o => (o.getAttribute('title') || o.innerText).trim() === want);
  if (!opt) return null;
  const r = opt.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
})()"""
# Also hides the "You're viewing a shared view" banner, which the shared view itself brings.
CLOSE_ASSISTANT = (
    "Array.from(document.querySelectorAll('button[aria-label=Close], button[aria-label=\"Hide banner\"]'))"
    ".forEach(b => b.click())"
)


async def main_async(args) -> None:
    client = MlflowClient(args.url)
    exp = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([exp.experiment_id], args.filter, order_by=["metrics.test_acc DESC"], max_results=50)
    if len(runs) < 2:
        raise SystemExit(f"experiment {args.experiment!r} has {len(runs)} analyzed run(s); need >= 2")
    key = "tc-readme"
    view = {
        "orderByKey": "metrics.`test_acc`",
        "orderByAsc": False,
        "searchFilter": args.filter,
        "selectedColumns": [f"metrics.`{c}`" for c in COLUMNS]
        + [f"params.`{p}`" for p in args.params.split(",") if p]
        + ["tags.`tc.dataset`", "tags.`tc.model`"],
        "runListHidden": False,
    }
    client.set_experiment_tag(exp.experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(view))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    async with Browser(args.width, args.height) as b:
        await b.call("Page.enable")
        await b.goto(f"{args.url}/#/experiments/{exp.experiment_id}/runs", 8)
        await b.js(QUIET)
        await b.goto(f"{args.url}/#/experiments/{exp.experiment_id}/runs?viewStateShareKey={key}", args.settle)
        await b.js(CLOSE_ASSISTANT)
        await asyncio.sleep(1)
        await b.shot(out / args.name)
        if args.only == "runs":
            return
        ids = json.dumps([r.info.run_id for r in runs])
        compare = f"{args.url}/#/compare-runs?runs={ids}&experiments={json.dumps([exp.experiment_id])}"
        await b.goto(compare, args.settle)
        await b.js(CLOSE_ASSISTANT)
        await b.js(CLEAR_ALL)
        # The compare page offers the per-cut κ (tc_kappa_test_d<cut>), not always the headline: pick cut 1.
        for i, names in enumerate((PARAMS, ("tc_kappa_test_d1", "test_acc"))):
            for name in names:
                await b.js(f"document.querySelectorAll('input[role=combobox]')[{i}].focus()")
                await b.call("Input.insertText", text=name)
                await asyncio.sleep(0.5)
                box = await b.js(PICK % json.dumps(name))  # the exact option: `tc_test` also offers `tc_test_d1`
                if box:  # a real mouse click there (CDP), as synthetic DOM events do not select
                    for kind in ("mousePressed", "mouseReleased"):
                        await b.call(
                            "Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1
                        )
                await asyncio.sleep(0.5)
            for kind in ("keyDown", "keyUp"):  # close this dropdown before the next one opens
                await b.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)
            await b.js("document.activeElement.blur()")
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        await b.shot(out / "compare_runs.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:5000")
    p.add_argument("--experiment", default="tc")
    p.add_argument("--out", default="docs/img")
    p.add_argument("--filter", default="metrics.tc_kappa_test > -2", help="MLflow search filter of the runs shown")
    p.add_argument("--only", choices=("all", "runs"), default="all", help="runs: the runs table only, no compare")
    p.add_argument("--name", default="runs_table.png", help="file name of the runs-table screenshot")
    p.add_argument("--params", default=",".join(PARAMS), help="comma-separated params shown as columns")
    p.add_argument("--width", type=int, default=1800)
    p.add_argument("--height", type=int, default=900)
    p.add_argument("--settle", type=float, default=12.0, help="seconds to let the React app render")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
