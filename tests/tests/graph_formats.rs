//! End-to-end: data published through the HTTP API, read back through `/api/v1/graph` in
//! every format (json, std.json, csv, txt, stats.json, png), plus `/api/v1/expr` and the
//! error answers. The PNG is decoded and checked for its size and one legend entry per line.

use argus_tests::{Server, enc, now_ms};
use serde_json::{Value, json};

const STEP: i64 = 60_000;

/// Three series (nf.app a, b, c) with values app_index * 10 + minute, for 10 minutes ending
/// two steps before now; returns (first timestamp, last timestamp).
fn load(server: &Server) -> (i64, i64) {
    let last = (now_ms() / STEP) * STEP - 2 * STEP;
    let first = last - 9 * STEP;
    let mut metrics = Vec::new();
    for (i, app) in ["a", "b", "c"].iter().enumerate() {
        for m in 0..10 {
            metrics.push(json!({
                "tags": {"name": "fmt.req", "nf.app": app, "atlas.dstype": "gauge"},
                "timestamp": first + m * STEP,
                "value": (i as i64 * 10 + m) as f64
            }));
        }
    }
    let (status, body) = server.post(
        "/api/v1/backfill",
        json!({"metrics": metrics}).to_string().as_bytes(),
        None,
    );
    assert_eq!(status, 200, "{body}");
    (first, last)
}

fn graph_path(q: &str, first: i64, last: i64, extra: &str) -> String {
    // Atlas's first point is one step after `s`.
    format!(
        "/api/v1/graph?q={}&s={}&e={last}&tz=UTC{extra}",
        enc(q),
        first - STEP
    )
}

const BY_APP: &str = "name,fmt.req,:eq,:sum,(,nf.app,),:by";

#[test]
fn every_format_in_atlas_shapes() {
    let server = Server::start(&[]);
    let (first, last) = load(&server);

    // json and std.json: the same document
    let json = server.get_json(&graph_path(BY_APP, first, last, "&format=json"));
    assert_eq!(json["start"], first);
    assert_eq!(json["step"], STEP);
    assert_eq!(
        json["legend"],
        json!(["(nf.app=a)", "(nf.app=b)", "(nf.app=c)"])
    );
    assert_eq!(
        json["metrics"][1],
        json!({"atlas.offset": "0w", "name": "fmt.req", "nf.app": "b"})
    );
    let rows = json["values"].as_array().unwrap();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0], json!([0.0, 10.0, 20.0]));
    assert_eq!(rows[9], json!([9.0, 19.0, 29.0]));
    assert_eq!(json["notices"], json!([]));
    let std = server.get_json(&graph_path(BY_APP, first, last, "&format=std.json"));
    assert_eq!(std, json);

    // csv: quoted header, ISO times in tz, %f values; txt: the same with tabs
    let (status, ctype, body) =
        server.get_bytes(&graph_path(BY_APP, first, last, "&format=csv"), &[]);
    assert_eq!((status, ctype.as_str()), (200, "text/csv"));
    let csv = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 11, "{csv}");
    assert_eq!(
        lines[0],
        "\"timestamp\",\"(nf.app=a)\",\"(nf.app=b)\",\"(nf.app=c)\""
    );
    let secs = first / 1000;
    let (h, m) = ((secs / 3600) % 24, (secs / 60) % 60);
    assert!(
        lines[1].ends_with(&format!("T{h:02}:{m:02}:00Z,0.000000,10.000000,20.000000")),
        "{}",
        lines[1]
    );
    let (_, ctype, body) = server.get_bytes(&graph_path(BY_APP, first, last, "&format=txt"), &[]);
    assert_eq!(ctype, "text/plain");
    let txt = String::from_utf8(body).unwrap();
    assert_eq!(txt.replace('\t', ","), csv);

    // stats.json: window statistics per line
    let stats = server.get_json(&graph_path(BY_APP, first, last, "&format=stats.json"));
    assert_eq!(stats["end"], last + STEP);
    assert_eq!(
        stats["stats"][2],
        json!({"count": 10, "avg": 24.5, "total": 245.0, "max": 29.0, "min": 20.0, "last": 29.0})
    );

    // png is the default format: a real image, w + 88 px wide (axis and padding), with one
    // legend swatch per line in the palette's colors
    let (status, ctype, png) = server.get_bytes(
        &graph_path(BY_APP, first, last, "&w=400&h=200&title=Requests"),
        &[],
    );
    assert_eq!((status, ctype.as_str()), (200, "image/png"));
    let (width, height, pixels) = decode(&png);
    assert_eq!(width, 488);
    assert!(
        height > 200 + 3 * 59,
        "room for three legend entries: {height}"
    );
    let swatches = legend_swatches(width, height, &pixels);
    assert_eq!(
        swatches,
        [0xff0075dc, 0xff993f00, 0xff9dcc00],
        "one legend entry per line, in armytage colors"
    );

    // layout=image: exactly the requested size; no legend
    let (_, _, png) = server.get_bytes(
        &graph_path(BY_APP, first, last, "&w=321&h=123&layout=image"),
        &[],
    );
    let (width, height, _) = decode(&png);
    assert_eq!((width, height), (321, 123));

    // more lines, more swatches; a styled expression keeps its color
    let q = format!("{BY_APP},name,fmt.req,:eq,:max,max,:legend,f00,:color");
    let (_, _, png) = server.get_bytes(&graph_path(&q, first, last, "&format=png"), &[]);
    let (width, height, pixels) = decode(&png);
    let swatches = legend_swatches(width, height, &pixels);
    assert_eq!(swatches.len(), 4);
    assert_eq!(swatches[3], 0xffff0000);

    // v2.json: the same graph for a browser to draw, each line with the PNG's color, its
    // style and its plot (y-axis); the PNG itself as a data URI unless hinted away
    let styled = format!("{BY_APP},:stack,name,fmt.req,:eq,:max,max,:legend,f00,:color,1,:axis");
    let v2 = server.get_json(&graph_path(&styled, first, last, "&format=v2.json&w=400"));
    let v2 = v2.as_array().expect("an array");
    let kinds: Vec<&str> = v2.iter().map(|o| o["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "graph-image",
            "graph-metadata",
            "plot-metadata",
            "plot-metadata",
            "timeseries",
            "timeseries",
            "timeseries",
            "timeseries"
        ]
    );
    let data_uri = v2[0]["data"].as_str().unwrap();
    let png_in_json = decode_base64(data_uri.strip_prefix("data:image/png;base64,").unwrap());
    let (_, _, png) = server.get_bytes(&graph_path(&styled, first, last, "&w=400"), &[]);
    assert_eq!(png_in_json, png, "the data URI is the graph's PNG");
    let meta = &v2[1];
    assert_eq!(
        (&meta["startTime"], &meta["endTime"], &meta["step"]),
        (&json!(first), &json!(last + STEP), &json!(STEP))
    );
    assert_eq!(
        (&meta["timezones"], &meta["width"], &meta["layout"]),
        (&json!(["UTC"]), &json!(400), &json!("CANVAS"))
    );
    assert_eq!(v2[3]["id"], 1);
    let lines = &v2[4..];
    let drawn: Vec<(&str, &str, &str, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["label"].as_str().unwrap(),
                l["color"].as_str().unwrap(),
                l["lineStyle"].as_str().unwrap(),
                l["plot"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        drawn,
        [
            ("(nf.app=a)", "ff0075dc", "STACK", 0),
            ("(nf.app=b)", "ff993f00", "STACK", 0),
            ("(nf.app=c)", "ff9dcc00", "STACK", 0),
            ("max", "ffff0000", "LINE", 1)
        ]
    );
    assert_eq!(lines[1]["groupByKeys"], json!(["nf.app"]));
    assert_eq!(lines[1]["tags"]["nf.app"], "b");
    assert_eq!(lines[2]["data"]["values"][9], 29.0);
    assert_eq!(lines[3]["data"]["values"][0], 20.0);
    let hinted = server.get_json(&graph_path(
        &styled,
        first,
        last,
        "&format=v2.json&hints=no-image",
    ));
    assert_eq!(hinted[0]["type"], "graph-metadata");
    assert_eq!(hinted[0]["renderingHints"], json!(["no-image"]));
}

/// Standard base64 with padding, as a browser's `atob` reads it.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        other => panic!("not base64: {other}"),
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .take_while(|c| **c != b'=')
            .enumerate()
            .fold(0u32, |n, (i, c)| n | u32::from(value(*c)) << (18 - 6 * i));
        let bytes = chunk.iter().filter(|c| **c != b'=').count() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + bytes]);
    }
    out
}

#[test]
fn expressions_of_every_vocabulary_through_the_api() {
    let server = Server::start(&[]);
    let (first, last) = load(&server);
    let get = |q: &str| server.get_json(&graph_path(q, first, last, "&format=json"));

    let v = get("name,fmt.req,:eq,:sum,(,nf.app,),:by,max,1,:topk-others-sum,$nf.app,:legend");
    assert_eq!(v["legend"], json!(["--others--", "c"]));
    assert_eq!(v["values"][0], json!([10.0, 20.0]));

    let v = get("name,fmt.req,:eq,:sum,:integral,2m,:offset");
    assert_eq!(v["legend"], json!(["integral(name=fmt.req) (offset=2m)"]));
    assert_eq!(v["metrics"][0]["atlas.offset"], "2m");

    let v = get("name,fmt.req,:eq,nf.app,a,:eq,:and,:sum,10,:mul,5");
    assert_eq!(v["legend"], json!(["name=fmt.req, nf.app=a", "5.0"]));
    assert_eq!(v["values"][3], json!([30.0, 5.0]));

    // the expr API shows each step; a bad expression gets the graph API's error
    let steps = server.get_json(&format!("/api/v1/expr?q={}", enc("name,fmt.req,:eq,:sum")));
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 5);
    assert_eq!(steps[3]["context"]["stack"], json!(["name,fmt.req,:eq"]));
    assert_eq!(steps[4]["program"], json!([]));
    for path in [
        format!("/api/v1/expr?q={}", enc("name,fmt.req,:eq,:foo")),
        graph_path("name,fmt.req,:eq,:foo", first, last, "&format=json"),
    ] {
        let (status, body) = server.get(&path);
        assert_eq!(status, 400, "{path}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["type"], "error");
        assert_eq!(err["message"], "unknown word ':foo' at position 17");
    }
    let (status, body) = server.get(&graph_path(BY_APP, first, last, "&format=xml"));
    assert_eq!(status, 400);
    assert!(body.contains("unknown format"), "{body}");

    // a browser asking for a PNG gets the error drawn as an image, as Atlas does
    let (status, ctype, png) = server.get_bytes(
        &graph_path("name,:eq", first, last, "&w=300&h=100"),
        &[("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0")],
    );
    assert_eq!((status, ctype.as_str()), (200, "image/png"));
    assert_eq!(decode(&png).0, 300);
}

fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(info.color_type, png::ColorType::Rgba);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Colors (`0xAARRGGBB`) of the legend's swatches, top to bottom: solid squares of at least
/// 10×10 px whose left edge is at x = 3 (Atlas draws a 13 px box at x = 2 with a 1 px border).
fn legend_swatches(width: u32, height: u32, pixels: &[u8]) -> Vec<u32> {
    let at = |x: u32, y: u32| {
        let i = ((y * width + x) * 4) as usize;
        u32::from_be_bytes([pixels[i + 3], pixels[i], pixels[i + 1], pixels[i + 2]])
    };
    let mut found = Vec::new();
    let mut y = 0;
    while y + 10 < height {
        let c = at(4, y);
        let solid = (0..10).all(|dy| (0..10).all(|dx| at(4 + dx, y + dy) == c));
        let background = [0xfff5f5f5, 0xffffffff, 0xff000000];
        if solid && !background.contains(&c) {
            found.push(c);
            y += 13;
        } else {
            y += 1;
        }
    }
    found
}

/// An answer of more than 60,000 numbers is sent while it is written, in parts: the text is
/// still one whole, valid `json` document with every value in its place.
#[test]
fn a_large_json_answer_streams_whole() {
    let server = Server::start(&[]);
    let (lines, minutes) = (700i64, 100i64);
    let last = (now_ms() / STEP) * STEP - 2 * STEP;
    let first = last - (minutes - 1) * STEP;
    for chunk in 0..7 {
        let mut metrics = Vec::new();
        for line in chunk * 100..(chunk + 1) * 100 {
            for m in 0..minutes {
                metrics.push(json!({
                    "tags": {"name": "big.req", "id": format!("{line:04}"), "atlas.dstype": "gauge"},
                    "timestamp": first + m * STEP,
                    "value": line as f64 + m as f64 / 64.0
                }));
            }
        }
        let (status, body) = server.post(
            "/api/v1/backfill",
            json!({"metrics": metrics}).to_string().as_bytes(),
            None,
        );
        assert_eq!(status, 200, "{body}");
    }
    let json = server.get_json(&graph_path(
        "name,big.req,:eq,:sum,(,id,),:by",
        first,
        last,
        "&format=json",
    ));
    assert_eq!(json["legend"].as_array().unwrap().len(), lines as usize);
    let rows = json["values"].as_array().unwrap();
    assert_eq!(rows.len(), minutes as usize);
    for (m, row) in rows.iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), lines as usize);
        for (line, v) in row.iter().enumerate() {
            assert_eq!(v.as_f64(), Some(line as f64 + m as f64 / 64.0), "row {m}");
        }
    }
    assert_eq!(json["notices"], json!([]));
}
