"""Tests for the HTML page builder."""

from __future__ import annotations

import base64
import re

import pytest

from entrolab.report.html import PNG_SIGNATURE, Page, fmt


def test_escapes_all_text_and_renders_table(tmp_path):
    page = Page("<run & co>")
    page.h2("a<b").para("x & y").pre("<script>alert(1)</script>")
    page.table([["pass@1", 0.123456789, None], ["<t>", 3, float("nan")]], header=["m", "v", "w"])
    out = page.write(tmp_path / "sub" / "p.html")
    html = out.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<h1>&lt;run &amp; co&gt;</h1>" in html and "<title>&lt;run &amp; co&gt;</title>" in html
    assert "<td>0.1235</td>" in html  # 4 significant digits
    assert html.count("<td>—</td>") == 2  # None and NaN
    assert "<th>m</th><th>v</th><th>w</th>" in html


def test_image_embeds_png_bytes_and_rejects_non_png(tmp_path):
    data = PNG_SIGNATURE + b"fake-body"
    f = tmp_path / "x.png"
    f.write_bytes(data)
    html = Page("t").image(f, alt='a"b').image(data).render()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert [base64.b64decode(u) for u in uris] == [data, data]
    assert 'alt="a&quot;b"' in html
    with pytest.raises(ValueError, match="PNG signature"):
        Page("t").image(b"GIF89a...")


def test_fmt():
    assert fmt(None) == "—" and fmt(True) == "True" and fmt(12) == "12"
    assert fmt(0.000123456) == "0.0001235" and fmt(float("inf")) == "inf"
    assert fmt(2.0 / 3, digits=2) == "0.67"
