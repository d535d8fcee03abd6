"""06_explorer in a real browser: JupyterLab (serving notebooks/, as `make lab` does) in headless
Chromium runs the committed notebook with its default relative run_dir, the widgets
render, choosing another user redraws the user-outfit space, and clicking a point fills the
details panel.

Needs Debian's chromium at /usr/bin/chromium (``make browser`` installs it; ``make test`` runs
that first) and Playwright's Python package (in the venv); this test installs nothing. A tiny run
folder is built once per module (00_data, 02_teacher, 03_student fnd); set FNDKIT_TEST_RUN_DIR to
an existing tiny run folder to reuse it instead. The JupyterLab server is stopped by its own
process id. Every wait is bounded.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SERVER_START_S = 90
PAGE_S = 90
RUN_ALL_S = 180
REDRAW_S = 90


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory):
    """A root folder holding a tiny run folder and a copy of 06_explorer pointed at it."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing; `make browser` installs Debian's chromium"
        if os.environ.get("CI"):  # CI runs `make test`, which installs it: a skip there would hide a break
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    from fndkit.plans.chain import default_chain, run_chain
    from fndkit.plans.execute import NOTEBOOK_DIR

    # A project as a clone lays it out: notebooks/ (served by JupyterLab, the kernel's working
    # directory) beside outputs/demo. The notebook is the committed one, unchanged: its default
    # run_dir "outputs/demo" must find the run folder without an injected absolute path.
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    shutil.copy(NOTEBOOK_DIR / "06_explorer.ipynb", root / "notebooks" / "06_explorer.ipynb")
    run_dir = root / "outputs" / "demo"
    reuse = os.environ.get("FNDKIT_TEST_RUN_DIR")
    if reuse:
        shutil.copytree(Path(reuse).resolve(), run_dir)
    else:
        wanted = ("00_data", "02_teacher", "03_student_fnd")
        # in this process, no kernels: the explorer needs the stages, not their executed notebooks
        run_chain(run_dir, [s for s in default_chain("tiny") if s.label in wanted], progress=False, via="process")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_server(lab_root, tmp_path_factory):
    """``jupyter lab`` on 127.0.0.1 with a random port and token; yields its base URL and token."""
    port, token = _free_port(), uuid.uuid4().hex
    state = tmp_path_factory.mktemp("jupyter_state")
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(state / "config"),
           "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
           "FNDKIT_PROJECT_ROOT": str(lab_root)}  # the kernel's project: lab_root, not this checkout
    log = open(state / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={lab_root / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.open_browser=False"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}; log: {state / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer within {SERVER_START_S} s; log: {state / 'server.log'}")
            time.sleep(0.5)
        yield base, token
    finally:
        # its own process only (the kernels it started are shut down by the server on SIGTERM)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


PLOTTED = """() => {
  const gd = document.querySelector('.fndkit-plot .js-plotly-plot');
  if (!gd || !gd.data) return null;
  return {meta: gd.layout.meta,
          traces: gd.data.map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])}))};
}"""

KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


def test_explorer_redraws_in_jupyterlab(lab_server, lab_root, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token = lab_server
    shot = tmp_path / "explorer.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(PAGE_S * 1000)
            page.goto(f"{base}/lab/tree/06_explorer.ipynb?token={token}", timeout=PAGE_S * 1000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=PAGE_S * 1000)
            page.wait_for_function(KERNEL_IDLE, timeout=PAGE_S * 1000)

            # Run -> Run All Cells, as a researcher would
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            page.wait_for_selector(".fndkit-plot .js-plotly-plot", timeout=RUN_ALL_S * 1000)
            select = page.locator(".fndkit-users select")
            select.wait_for(timeout=PAGE_S * 1000)
            page.wait_for_function(f"() => ({PLOTTED})() !== null", timeout=PAGE_S * 1000)
            before = page.evaluate(PLOTTED)
            names_before = {t["name"] for t in before["traces"]}
            assert sum(len(t["x"]) for t in before["traces"]) > 10
            shown = [n for n in names_before if n.startswith("user ")]
            assert shown, f"no user markers among traces {sorted(names_before)}"

            # choose a user not shown yet: the picture must be redrawn with other points
            options = select.locator("option").all_inner_texts()  # ipywidgets writes spaces as nbsp
            raw = next(o for o in options if o.replace("\xa0", " ").strip() not in shown)
            other = raw.replace("\xa0", " ").strip()
            select.select_option(label=raw)
            page.wait_for_function(
                f"(old) => {{ const d = ({PLOTTED})(); return d !== null && d.meta !== old; }}",
                arg=before["meta"], timeout=REDRAW_S * 1000)
            after = page.evaluate(PLOTTED)
            names_after = {t["name"] for t in after["traces"]}
            assert other in names_after and not (set(shown) & names_after)
            coords = lambda d: sorted((x, y) for t in d["traces"] for x, y in zip(t["x"], t["y"]))
            assert coords(after) != coords(before)

            # clicking a plotted outfit fills the details panel through the kernel
            # (Run All left the notebook scrolled to its end)
            page.locator(".fndkit-plot").scroll_into_view_if_needed()
            point = page.locator(".fndkit-plot .js-plotly-plot .scatterlayer .trace path.point").first
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function(
                "() => /(clicked|hovered)/.test(document.querySelector('.fndkit-explorer').innerText)",
                timeout=30_000)
            # the outfit's item images arrive as an ipywidgets Image (a blob: URL of PNG bytes)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.fndkit-explorer img'))"
                ".some(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
            assert "outfit of user" in page.locator(".fndkit-explorer").inner_text()

            page.locator(".fndkit-explorer").screenshot(path=str(shot))
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    # the notebook wrote into the project's outputs/demo, found from notebooks/ by its relative default
    assert (lab_root / "outputs" / "demo" / "explorer" / "metrics.json").exists()
