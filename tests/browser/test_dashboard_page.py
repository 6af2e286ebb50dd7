"""The dashboard in a real headless Chromium, against a desktop cluster (`pidaemon sim`) on a real mosquitto.

One cluster and one browser for the module, in this order: the page shows every node in its place;
a stopped worker turns offline; a Warble appears in the feed; LIGHTS changes the lamp; a click opens
a node's panel; a page left for another lets its WebSocket go and, shown again from the back/forward
cache, is live at once; the page reconnects after the server restarts. What is checked is what a person
sees (colours as computed by the browser, texts); the page's hook and data-* attributes only say when to look.
Screenshots of each step go to the module's tmp dir (and to $DASHBOARD_SCREENSHOTS when set).
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from pidaemon.placement import load_placement
from tests.support.browser import DashboardPage, chromium_missing, set_viewport, start_chromium, wait_for
from tests.support.mosquitto import Mosquitto
from tests.support.nodes import node_config, start_node_process, write_config
from tests.support.observer import Observer, next_payload
from tests.support.sim_process import SimProcess

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

WORKERS = 5
EXTRA_WORKER = "pi-browser-extra"   # a worker of its own process, so that a test can stop it


class Cluster:
    def __init__(self, root):
        self.root = root
        self.broker = Mosquitto(root / "broker").start()
        # The server keeps its nodes' readings (telemetry_store) for the sparklines of a node's panel;
        # the workers send them every second, so that a sparkline has a few samples soon. The server's
        # own telemetry (its count of live pages) comes every second too.
        roles = write_config(root / "sim-roles.yaml", {"server": {"plugins": {"telemetry_store": {},
                                                                              "telemetry": {"interval": 1}}},
                                                        "worker": {"plugins": {"telemetry": {"interval": 1}}}})
        self.sim = SimProcess(self.broker.url, root / "sim-state", WORKERS, log_path=root / "sim.log",
                              extra_args=("--config", str(roles)))
        config = node_config(EXTRA_WORKER, self.broker.url,
                             plugins={"ping": {}, "telemetry": {"interval": 1}, "simulated_system": {}})
        self.extra_config = write_config(root / "extra-worker.yaml", config)
        self.extra = None

    def start(self):
        self.sim.start(fresh=True)
        self.extra = start_node_process(self.extra_config, log_path=self.root / "extra-worker.log")
        return self

    @property
    def node_ids(self) -> list[str]:
        return ["sim-server", *self.sim.worker_ids, "sim-lights", "sim-audio", EXTRA_WORKER]

    def placement_file(self):
        found = sorted(self.sim.state_dir.rglob("placement*.yaml"))
        assert found, f"pidaemon sim wrote no placement file under {self.sim.state_dir}"
        return found[0]

    def publish(self, topic: str, payload: str, *options: str) -> None:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1", *options,
                        "-t", topic, "-m", payload], check=True, timeout=10)

    def close(self):
        if self.extra and self.extra.poll() is None:
            self.extra.terminate()
            self.extra.wait(10)
        self.sim.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    instance = Cluster(tmp_path_factory.mktemp("dashboard-cluster"))
    try:
        yield instance.start()
    finally:
        instance.close()


@pytest.fixture(scope="module")
def page(cluster, tmp_path_factory):
    driver = start_chromium(1600, 1000, profile_dir=tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield DashboardPage(driver, cluster.sim.url + "/", tmp_path_factory.mktemp("screenshots")).open()
    finally:
        driver.quit()


def test_every_node_is_shown_in_its_place(cluster, page):
    placement = load_placement(cluster.placement_file())
    places = {node: "-".join(map(str, place.as_list())) for node, place in placement.by_id.items()}
    assert set(cluster.sim.worker_ids) <= set(places), f"the sim placed {sorted(places)}"

    try:
        cells = wait_for(lambda: (c := page.cells()) and set(cluster.node_ids) <= set(c) and c,
                         20, "a cell for every node of the cluster")
    except TimeoutError:
        page.screenshot("1-every-node-in-its-place-FAILED")
        raise AssertionError(f"no cell for {sorted(set(cluster.node_ids) - set(page.cells()))}; "
                             f"the page: {page.hook()}") from None
    for node_id in cluster.node_ids:
        if node_id in places:
            assert cells[node_id]["place"] == places[node_id], node_id
            assert not cells[node_id]["in_tray"]
        else:
            assert cells[node_id]["in_tray"], f"{node_id} has no place in the file: it belongs in the tray"
    # Every slot of the box is drawn, and the places not in the file are empty.
    slots = page.js("return document.querySelectorAll('#racks .cell[data-place]').length")
    assert slots == placement.layout.capacity
    assert page.js("return document.querySelectorAll('#racks .cell[data-node]').length") == \
        len([n for n in cluster.node_ids if n in places])

    # What a person sees: a worker's cell in the legend's colour for its state.
    worker = cluster.sim.worker_ids[0]
    wait_for(lambda: page.cells()[worker]["state"] == "online", 20, f"{worker} online")
    assert page.background(page.cell(worker)) == page.legend_colour("online")
    # The two Warbles / s figures say what each counts: the total over 10 s, the plot over 10 minutes.
    assert page.text('[data-total="warbles_per_s"] dt') == "Warbles / s (last 10 s)"
    assert page.text("#plots-note").startswith("plots: last 10 min")
    page.screenshot("1-every-node-in-its-place")


def test_a_stopped_worker_turns_offline(cluster, page):
    wait_for(lambda: page.cells().get(EXTRA_WORKER, {}).get("state") == "online", 20, f"{EXTRA_WORKER} online")
    cluster.extra.terminate()
    cluster.extra.wait(15)
    wait_for(lambda: page.cells()[EXTRA_WORKER]["state"] == "offline", 15, f"{EXTRA_WORKER} shown offline")
    cell = page.cell(EXTRA_WORKER)
    assert page.background(cell) == page.legend_colour("offline")
    # Not colour alone: the offline cell is striped and outlined with dashes.
    assert "gradient" in page.js("return getComputedStyle(arguments[0]).backgroundImage", cell)
    assert page.js("return getComputedStyle(arguments[0]).borderTopStyle", cell) == "dashed"
    assert page.background(cell) != page.legend_colour("online")
    page.screenshot("2-stopped-worker-offline")


def test_a_submitted_warble_appears_in_the_feed(cluster, page):
    marker = f"hello-{uuid.uuid4().hex[:8]}"
    program = f'PRINT("{marker}")'
    # A post as anyone would send it, its user as an MQTT v5 user property.
    cluster.publish("picluster/warble/submit", f"#pi{{{program}}}", "-V", "mqttv5",
                    "-D", "publish", "user-property", "user", "ada")

    item = wait_for(lambda: page.js("""
        for (const li of document.querySelectorAll('#feed li[data-job]'))
            if (li.querySelector('pre.output') && li.querySelector('pre.output').innerText.includes(arguments[0]))
                return '#feed li[data-job="' + li.dataset.job + '"]';
        return null;""", marker), 20, "the Warble and its output in the feed")
    assert page.visible(item)
    assert page.text(f"{item} pre.source") == program   # the program the post holds
    assert page.text(f"{item} .who") == "ada"
    assert page.text(f"{item} .status") == "ok"
    assert page.text(f"{item} .node") in cluster.sim.worker_ids
    page.screenshot("3-warble-in-the-feed")


def test_lights_in_a_warble_change_the_lamp(cluster, page):
    observer = Observer(cluster.broker.port, topics=("picluster/lights/state",))
    try:
        since = len(observer.messages)
        cluster.publish("picluster/warble/submit", json.dumps(
            {"user": "grace", "source": "#pi{LIGHTS(5, 12, 200, 40)}"}))
        state = next_payload(observer, "picluster/lights/state",
                             lambda s: s["pixels"][5][:3] == [12, 200, 40], since=since, timeout=20)
    finally:
        observer.close()
    pixel = state["pixels"][5]
    white = pixel[3] if len(pixel) > 3 else 0
    expected = tuple(round(min(255, c + white) * state["brightness"]) for c in pixel[:3])
    wait_for(lambda: len(page.lamp_colours()) == len(state["pixels"]) and page.lamp_colours()[5] == expected,
             10, f"lamp pixel 5 shown as {expected}")
    page.screenshot("4-lights-on-the-lamp")


def test_clicking_a_node_opens_its_panel(cluster, page):
    worker = cluster.sim.worker_ids[1]
    page.cell(worker).click()
    wait_for(lambda: page.js("return document.querySelector('#panel').dataset.loaded") == "true", 10,
             "the panel loaded")
    assert page.visible("#panel")
    assert page.text("#panel .node-id") == worker
    assert "online" in page.text("#panel [data-panel-state]")
    assert "running" in page.text('#panel tr[data-plugin="warble_worker"]')
    assert "simulated" in page.text("#panel-body")
    # Sparklines of CPU, temperature and memory from the telemetry store (refreshed while the panel is open).
    wait_for(lambda: page.js("""return [...document.querySelectorAll('#panel [data-spark] polyline')]
                                .filter(line => line.points.numberOfItems >= 3).length""") == 3,
             15, "three sparklines of several samples")
    page.screenshot("5-node-panel")
    page.driver.find_element("id", "panel-close").click()
    wait_for(lambda: not page.visible("#panel"), 5, "the panel closed")


@pytest.mark.parametrize("width, height", [(1024, 768), (1920, 1080)], ids=["ipad", "projector"])
def test_the_whole_box_fits_from_an_ipad_to_a_projector(cluster, page, width, height):
    set_viewport(page.driver, width, height)
    try:
        # The cells are sized to the screen after a resize: the whole box and the side column are in view.
        def layout():
            return page.js("""
                const box = document.getElementById('box').getBoundingClientRect();
                const side = document.querySelector('.side').getBoundingClientRect();
                const cell = document.querySelector('#racks .cell').getBoundingClientRect();
                return {box: [box.left, box.top, box.right, box.bottom], side: [side.left, side.right],
                        cell: cell.width, scroll: [document.documentElement.scrollWidth, innerWidth]};""")
        shown = wait_for(lambda: (l := layout())["box"][2] <= width and l["box"][3] <= height and l, 5,
                         f"the box within {width}x{height}")
        assert shown["box"][2] <= shown["side"][0] <= shown["side"][1] <= width
        assert shown["scroll"][0] <= shown["scroll"][1], "no sideways scrolling"
        assert shown["cell"] >= 8, "a Pi is big enough to see and to tap"
        page.screenshot(f"6-{width}x{height}")
    finally:
        set_viewport(page.driver, 1600, 1000)


SERVER_TELEMETRY = "picluster/nodes/sim-server/telemetry"


def live_pages(payload: dict) -> int | None:
    """How many pages the server pushes to, from its telemetry."""
    return ((payload.get("readings") or {}).get("dashboard") or {}).get("pages")


def test_a_page_left_for_another_lets_its_socket_go_and_comes_back_live(cluster, page):
    observer = Observer(cluster.broker.port, topics=(SERVER_TELEMETRY,))
    try:
        since = len(observer.messages)
        next_payload(observer, SERVER_TELEMETRY, lambda t: live_pages(t) == 1, since=since, timeout=15)
        before = page.hook()
        page.js("window.leftAndBack = arguments[0]", before["snapshots"])  # survives only in the bfcache

        # Away in the same tab: Chromium keeps the page, frozen, in its back/forward cache.
        page.driver.get("data:text/html,<title>elsewhere</title><p>elsewhere</p>")
        since = len(observer.messages)
        try:
            next_payload(observer, SERVER_TELEMETRY, lambda t: live_pages(t) == 0, since=since, timeout=15)
        except TimeoutError:
            raise AssertionError("the server still pushes to the page that was left: it kept its WebSocket") from None
        since = len(observer.messages)

        page.driver.back()
        restored = wait_for(lambda: page.js("return document.readyState") == "complete"
                            and page.js("return [window.leftAndBack ?? null, performance.getEntriesByType("
                                        "'navigation')[0].notRestoredReasons]"), 10, "the page shown again")
        assert restored[0] == before["snapshots"], \
            f"the page was loaded again, not restored from the back/forward cache: {restored[1]}"
        hook = wait_for(lambda: (h := page.hook())["connected"] and h["snapshots"] > before["snapshots"] and h, 10,
                        "a fresh snapshot on the restored page")
        assert hook["reconnects"] == before["reconnects"], "left on purpose: no reconnecting with backoff"
        assert not page.visible("#banner")
        assert page.text("#connection") == "live"
        next_payload(observer, SERVER_TELEMETRY, lambda t: live_pages(t) == 1, since=since, timeout=15)
    finally:
        observer.close()
    # Live again: a Warble submitted now shows in the feed.
    marker = f"back-{uuid.uuid4().hex[:8]}"
    cluster.publish("picluster/warble/submit", json.dumps({"user": "ada", "source": f'#pi{{PRINT("{marker}")}}'}))
    wait_for(lambda: marker in page.text("#feed"), 20, "a new Warble in the feed of the restored page")
    page.screenshot("7-back-from-another-page")


def test_the_page_reconnects_after_the_server_restarts(cluster, page):
    snapshots = page.hook()["snapshots"]
    cluster.sim.stop()
    wait_for(lambda: page.visible("#banner") and "Reconnecting" in page.text("#banner"), 10, "the reconnecting banner")
    assert page.js("return document.body.dataset.connected") == "false"
    page.screenshot("8-reconnecting")

    cluster.sim.start()
    hook = wait_for(lambda: (h := page.hook())["connected"] and h["snapshots"] > snapshots and h, 30,
                    "a fresh snapshot after the restart")
    assert not page.visible("#banner")
    assert hook["nodes"] >= len(cluster.sim.worker_ids)
    wait_for(lambda: all(page.cells()[w]["state"] == "online" for w in cluster.sim.worker_ids), 20,
             "the workers online again")
    page.screenshot("9-reconnected")
    assert not [e for e in page.console_errors() if "dashboard" in e and "WebSocket" not in e]
