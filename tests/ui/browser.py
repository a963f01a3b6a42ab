"""Drives Argus's web UI in headless Debian Chromium with Selenium, as a person would.

Run by tests/tests/ui_browser.rs, which starts the server and an agent, and answers this
script's requests on standard input: the script prints `NEED <what>` and waits for a line.
Arguments: the server's base URL, the window start and end (epoch ms), the directory for
screenshots. Any failed check raises, and the script exits non-zero with the reason.
"""

import json
import math
import os
import sys
import time
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, START, END, SHOTS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# main: the pages end to end; auth <token>: a server with --auth-file and a read token;
# scale: 2,000 lines, and a live tail of 1,000 rows a second.
MODE = sys.argv[5] if len(sys.argv) > 5 else "main"
ASL = "name,ui.requests,:eq,:sum,(,nf.app,),:by"


def driver():
    """Headless Chromium; in cluster mode (served over HTTPS with the test's own CA) it
    accepts that certificate, as a user would once."""
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager reach the network
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    if MODE == "cluster":
        opts.add_argument("--ignore-certificate-errors")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def need(what):
    print(f"NEED {what}", flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "ok":
        raise SystemExit(f"the test could not {what}: {answer}")


def wait(d, what, cond, timeout=15):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda _: cond())
    except Exception as e:  # noqa: BLE001 - the message says what was awaited
        shot(d, "failed")
        raise SystemExit(f"waited {timeout}s for {what}: {e!r}") from None


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def api(path, params):
    with urllib.request.urlopen(f"{BASE}{path}?{urllib.parse.urlencode(params)}") as r:
        return json.loads(r.read())


def css(d, sel):
    return d.find_elements(By.CSS_SELECTOR, sel)


def type_into(d, sel, text):
    box = css(d, sel)[0]
    box.clear()
    box.send_keys(text)


def query_view(d):
    d.get(f"{BASE}/#/query")
    box = wait(d, "the query box", lambda: css(d, "#expr"))[0]
    # Autocomplete: after `name,` the names the tags API knows, starting with what is typed.
    box.send_keys("name,ui.req")
    wait(d, "the suggestion ui.requests", lambda: [x for x in css(d, "#suggest div") if x.text == "ui.requests"])
    box.send_keys(Keys.TAB)
    if box.get_attribute("value") != "name,ui.requests":
        raise SystemExit(f"autocomplete left {box.get_attribute('value')!r}")
    box.send_keys(",:eq,:sum,(,nf.app,),:by")
    for sel, value in (("#s", str(START)), ("#e", str(END)), ("#step", "1s"), ("#tz", "UTC")):
        type_into(d, sel, value)
    t0 = time.monotonic()
    css(d, "#run")[0].click()
    wait(d, "the chart", lambda: css(d, "canvas.chart"))
    entries = wait(d, "the legend", lambda: css(d, ".legend span.entry"))
    print(f"graph shown in {time.monotonic() - t0:.2f}s", flush=True)
    link = d.current_url
    labels = sorted(e.text for e in entries)
    if labels != ["(nf.app=alpha)", "(nf.app=beta)", "(nf.app=gamma)"]:
        raise SystemExit(f"legend {labels}")
    shot(d, "query-graph")

    # Hover the middle of the plot: the tooltip shows every line's value at that step, as
    # the JSON API gives it.
    canvas = css(d, "canvas.chart")[0]
    ActionChains(d).move_to_element_with_offset(canvas, canvas.size["width"] // 10, 0).perform()
    tip = wait(d, "the tooltip", lambda: [t for t in css(d, ".tooltip") if t.is_displayed()])[0]
    index = int(tip.get_attribute("data-index"))
    shown = {}
    for line in tip.find_elements(By.CSS_SELECTOR, ".tip-line"):
        label = line.text.split(":")[0]
        shown[label] = float(line.find_element(By.CSS_SELECTOR, ".tip-value").get_attribute("data-value"))
    j = api("/api/v1/graph", {"q": ASL, "s": START, "e": END, "step": "1s", "tz": "UTC", "format": "std.json"})
    want = {}
    for i, label in enumerate(j["legend"]):
        v = j["values"][index][i]
        want[label] = float("nan") if v == "NaN" else float(v)
    same = shown.keys() == want.keys() and all(
        (math.isnan(a) and math.isnan(want[k])) or a == want[k] for k, a in shown.items())
    if not same:
        raise SystemExit(f"hover at step {index} shows {shown}, the API says {want}")
    print(f"hover at step {index} matches the API: {shown}", flush=True)
    shot(d, "query-hover")

    # The Atlas PNG of the same graph is a click away.
    with urllib.request.urlopen(css(d, "#png")[0].get_attribute("href")) as r:
        if r.headers.get("Content-Type") != "image/png" or not r.read().startswith(b"\x89PNG"):
            raise SystemExit("the PNG link does not give a PNG")

    # The step-by-step view of the expression.
    css(d, ".tabs button[data-view=steps]")[0].click()
    steps = wait(d, "the steps", lambda: (lambda r: r if len(r) > 5 else None)(css(d, "#out table.data tr")))
    print(f"{len(steps) - 1} steps in the step-by-step view", flush=True)
    css(d, ".tabs button[data-view=graph]")[0].click()
    wait(d, "the chart again", lambda: css(d, ".legend span.entry"))

    # A legend entry hides its line.
    entries = css(d, ".legend span.entry")
    entries[0].click()
    wait(d, "the entry to turn off", lambda: "off" in entries[0].get_attribute("class"))
    entries[0].click()

    # The table view.
    css(d, ".tabs button[data-view=table]")[0].click()
    rows = wait(d, "the table", lambda: css(d, "#data-table tr"))
    if len(rows) != len(j["values"]) + 1:
        raise SystemExit(f"table has {len(rows)} rows for {len(j['values'])} steps")
    shot(d, "query-table")

    # PromQL: the same question.
    Select(css(d, "#lang")[0]).select_by_value("promql")
    box = css(d, "#expr")[0]
    box.clear()
    # Argus keeps Atlas's dotted names and keys: PromQL quotes them (Prometheus 3's syntax).
    box.send_keys('sum by ("nf.app") ({"ui.requests"})')
    css(d, ".tabs button[data-view=graph]")[0].click()
    css(d, "#run")[0].click()
    entries = wait(d, "the PromQL legend", lambda: css(d, ".legend span.entry"))
    if len(entries) != 3:
        raise SystemExit(f"PromQL legend has {len(entries)} entries: {[e.text for e in entries]}")
    shot(d, "query-promql")

    # Back to the Stack Language: a stack, and a second expression overlaid on a second axis
    # in its own color. Each line is drawn as its expression asks.
    Select(css(d, "#lang")[0]).select_by_value("asl")
    type_into(d, "#expr", STACKED)
    css(d, "#add-expr")[0].click()
    wait(d, "a second expression box", lambda: css(d, "#more-exprs textarea"))[0].send_keys(OVERLAID)
    css(d, "#run")[0].click()
    wait(d, "the overlaid legend", lambda: len(css(d, ".legend span.entry")) == 4)
    check_styles(d)
    shot(d, "query-styles")
    return d.current_url


STACKED = ASL + ",:stack"
OVERLAID = "name,ui.requests,:eq,:max,peak,:legend,f00,:color,1,:axis"


def check_styles(d):
    """The legend and chart follow the expressions: three stacked lines in the palette's
    colors on the left axis, the overlaid one red on a second axis (as v2.json says)."""
    entries = css(d, ".legend span.entry")
    seen = [(e.text, e.get_attribute("data-style"), e.get_attribute("data-plot"),
             e.find_element(By.CSS_SELECTOR, ".sw").value_of_css_property("background-color"))
            for e in entries]
    want = [("(nf.app=alpha)", "STACK", "0", "rgba(0, 117, 220, 1)"),
            ("(nf.app=beta)", "STACK", "0", "rgba(153, 63, 0, 1)"),
            ("(nf.app=gamma)", "STACK", "0", "rgba(157, 204, 0, 1)"),
            ("peak", "LINE", "1", "rgba(255, 0, 0, 1)")]
    if seen != want:
        raise SystemExit(f"styled legend {seen}, expected {want}")
    if css(d, "canvas.chart")[0].get_attribute("data-plots") != "2":
        raise SystemExit("the overlaid expression is not on a second axis")
    print(f"styles from the expressions: {seen}", flush=True)


def a_link_shows_the_same_view(link):
    fresh = driver()
    try:
        fresh.get(link)
        wait(fresh, "the legend in a fresh browser", lambda: len(css(fresh, ".legend span.entry")) == 4)
        check_styles(fresh)
        if css(fresh, "#expr")[0].get_attribute("value") != STACKED:
            raise SystemExit("a fresh browser lost the expression")
        extra = [t.get_attribute("value") for t in css(fresh, "#more-exprs textarea")]
        if extra != [OVERLAID]:
            raise SystemExit(f"a fresh browser shows the overlaid expressions {extra}")
    finally:
        fresh.quit()


def live_view(d):
    d.get(f"{BASE}/#/live")
    box = wait(d, "the live box", lambda: css(d, "#live-q"))[0]
    box.send_keys("select path, status from requests where status >= 500")
    css(d, "#live-start")[0].click()
    wait(d, "the subscription", lambda: "subscribed" in css(d, "#live-info")[0].text)
    need("see the agent take the subscription")
    need("post events to the agent")
    expected = sorted(json.loads(sys.stdin.readline()))
    got = wait(d, "the matching rows", lambda: (lambda r: r if len(r) >= len(expected) else None)(
        [e.text for e in css(d, ".live-row")]))
    time.sleep(0.5)  # let a duplicate, if any, arrive before counting
    got = sorted(e.text for e in css(d, ".live-row"))
    if got != expected:
        raise SystemExit(f"live rows {got}, expected {expected}")
    print(f"{len(got)} live rows, exactly the matching events", flush=True)
    css(d, ".live-row")[0].click()
    shot(d, "live")
    css(d, "#live-pause")[0].click()
    wait(d, "pause", lambda: css(d, "#live-pause")[0].text == "Resume")
    css(d, "#live-cancel")[0].click()
    need("see the agent drop the subscription")


def explore_view(d):
    d.get(f"{BASE}/#/explore")
    key = wait(d, "the tag keys", lambda: css(d, "#tag-keys a[data-key='nf.app']"))[0]
    key.click()
    values = wait(d, "the values of nf.app", lambda: css(d, "#tag-values a"))
    texts = sorted(v.text.split()[0] for v in values)
    if texts != ["alpha", "beta", "gamma"]:
        raise SystemExit(f"values of nf.app: {texts}")
    wait(d, "the cardinality table", lambda: css(d, "#cardinality table"))
    agents = wait(d, "the agents table", lambda: css(d, "#agents table td"))
    need("the agent's id and host")
    agent_id, node = sys.stdin.readline().split()
    texts = [cell.text for cell in css(d, "#agents table td")]
    if agent_id not in texts or node not in texts:
        raise SystemExit(f"the agents table {texts} lacks {agent_id} on {node}")
    # Its own counters: it has sent samples (the gauges above) by now.
    sent = wait(d, "the agent's counters", lambda: [c for c in css(d, "#agents table td") if c.text and c.text[0].isdigit() and c.text != "1s"])
    print("agents: " + " | ".join(cell.text for cell in css(d, "#agents table td")), flush=True)
    # Its samples accounted for end to end (issue 17): sent and applied, nothing unexplained.
    heads = [h.text for h in css(d, "#agents table tr:first-child th")]
    cells = [c.text for c in css(d, "#agents table tr:nth-child(2) td")]
    row = dict(zip(heads, cells))
    if row.get("samples unexplained") != "0" or not row.get("samples sent", "").isdigit():
        raise SystemExit(f"the agents table's loss columns: {row}")
    shot(d, "explore")


def with_token(d, read_token):
    """The UI asks for a token, works with a read token, and shows the API's 403 words for
    what needs more."""
    params = {"lang": "asl", "q": ASL, "s": str(START), "e": str(END), "step": "1s", "tz": "UTC"}
    d.get(f"{BASE}/#/query?{urllib.parse.urlencode(params)}")
    wait(d, "the token dialog", lambda: d.execute_script("return document.getElementById('token-dialog').open"))
    shot(d, "auth-token")
    css(d, "#token-input")[0].send_keys(read_token)
    css(d, "#token-save")[0].click()
    entries = wait(d, "the legend with the token", lambda: css(d, ".legend span.entry"))
    if len(entries) != 3:
        raise SystemExit(f"with the read token the legend has {len(entries)} entries")
    d.get(f"{BASE}/#/explore")
    wait(d, "the tag keys with the token", lambda: css(d, "#tag-keys a[data-key='nf.app']"))
    refusal = wait(d, "the cardinality refusal", lambda: css(d, "#cardinality .error"))[0].text
    if "403" not in refusal or "this needs admin" not in refusal:
        raise SystemExit(f"cardinality with a read token shows {refusal!r}")
    print(f"a read token: graphs and tags work; cardinality shows {refusal!r}", flush=True)
    shot(d, "auth-refused")


def at_scale(d):
    """2,000 lines of 180 steps draw within a second; a live tail of 1,000 rows a second
    keeps at most 1,000 rows on screen and counts the rest."""
    # Atlas's first point is a step after `s`.
    params = {"lang": "asl", "q": "name,ui.many,:eq,:sum,(,node,),:by", "s": str(START - 1000), "e": str(END),
              "step": "1s", "tz": "UTC"}
    d.get(f"{BASE}/#/query?{urllib.parse.urlencode(params)}")
    wait(d, "2,000 lines", lambda: [e for e in css(d, "#line-count") if e.text == "2000 lines"], timeout=60)
    canvas = wait(d, "the chart", lambda: css(d, "canvas.chart"))[0]
    draw_ms = int(canvas.get_attribute("data-draw-ms"))
    total_ms = int(wait(d, "the timing", lambda: css(d, "#out")[0].get_attribute("data-total-ms")))
    steps = len(api("/api/v1/graph", {**params, "format": "std.json"})["values"])
    print(f"2000 lines x {steps} steps: drawn in {draw_ms} ms, {total_ms} ms from request to view", flush=True)
    if steps < 180 or draw_ms >= 1000 or total_ms >= 1000:
        raise SystemExit(f"2000 lines x {steps} steps: drawing {draw_ms} ms, whole view {total_ms} ms (budget 1000)")
    shot(d, "scale")

    d.get(f"{BASE}/#/live")
    wait(d, "the live box", lambda: css(d, "#live-q"))[0].send_keys("select seq from flood")
    css(d, "#live-start")[0].click()
    wait(d, "the subscription", lambda: "subscribed" in css(d, "#live-info")[0].text)
    need("flood the stream")
    total = int(sys.stdin.readline())

    def counted():
        received = int(css(d, "#live-received")[0].text)
        dropped = int(css(d, "#live-dropped")[0].text)
        return (received, dropped) if received + dropped >= total else None

    received, dropped = wait(d, "every row received or counted as dropped", counted, timeout=30)
    shown = len(css(d, ".live-row"))
    evicted = int(css(d, "#live-evicted")[0].text)
    print(f"live tail: {received} rows received, {dropped} dropped by the server, {shown} on screen, "
          f"{evicted} left the view", flush=True)
    if shown > 1000 or evicted != received - shown or received + dropped != total:
        raise SystemExit(f"live tail: {received} received, {dropped} dropped, {shown} shown, {evicted} evicted")
    shot(d, "live-flood")


def in_a_cluster_over_https(d):
    """Two nodes over one NATS server, served over HTTPS: a graph of data written through
    the other node, a live tail of events posted to the other node, and the cluster's
    nodes, streams and partitions on the Explore page."""
    if not BASE.startswith("https://"):
        raise SystemExit(f"expected an https:// server, got {BASE}")
    params = {"lang": "asl", "q": ASL, "s": str(START), "e": str(END), "step": "1s", "tz": "UTC"}
    d.get(f"{BASE}/#/query?{urllib.parse.urlencode(params)}")
    entries = wait(d, "the legend over https", lambda: css(d, ".legend span.entry"), timeout=30)
    if sorted(e.text for e in entries) != ["(nf.app=alpha)", "(nf.app=beta)", "(nf.app=gamma)"]:
        raise SystemExit(f"legend over https: {[e.text for e in entries]}")

    d.get(f"{BASE}/#/live")
    wait(d, "the live box", lambda: css(d, "#live-q"))[0].send_keys(
        "select path, status from requests where status >= 500")
    css(d, "#live-start")[0].click()
    wait(d, "the subscription", lambda: "subscribed" in css(d, "#live-info")[0].text)
    need("post events to the other node")
    expected = sorted(json.loads(sys.stdin.readline()))
    wait(d, "the rows from the other node", lambda: len(css(d, ".live-row")) >= len(expected), timeout=30)
    got = sorted(e.text for e in css(d, ".live-row"))
    if got != expected:
        raise SystemExit(f"live rows over https {got}, expected {expected}")
    print(f"{len(got)} live rows over https from the other node", flush=True)
    css(d, "#live-cancel")[0].click()

    d.get(f"{BASE}/#/explore")
    need("the cluster's shape")
    nodes, partitions = (int(x) for x in sys.stdin.readline().split())
    wait(d, "the nodes table", lambda: len(css(d, "#cluster-nodes tr")) == nodes + 1, timeout=30)
    rows = wait(d, "the partitions table", lambda: (lambda r: r if len(r) == partitions + 1 else None)(
        css(d, "#cluster-partitions tr")))
    streams = css(d, "#cluster-streams tr")
    if len(streams) < 2:
        raise SystemExit("no stream in the streams table")
    print(f"cluster: {nodes} nodes, {len(streams) - 1} streams, {len(rows) - 1} partitions; first: "
          + " | ".join(c.text for c in rows[1].find_elements(By.CSS_SELECTOR, "td")), flush=True)
    d.execute_script("document.getElementById('cluster').scrollIntoView()")
    shot(d, "cluster")


def main():
    d = driver()
    try:
        if MODE == "auth":
            with_token(d, sys.argv[6])
        elif MODE == "scale":
            at_scale(d)
        elif MODE == "cluster":
            in_a_cluster_over_https(d)
        else:
            link = query_view(d)
            a_link_shows_the_same_view(link)
            live_view(d)
            explore_view(d)
            errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
            if errors:
                raise SystemExit(f"the page logged errors: {errors}")
    finally:
        d.quit()
    print("DONE", flush=True)


main()
