"""Generated sections of the results pages (entrolab.studies.pages), on hand-made text."""

from __future__ import annotations

import pytest

from entrolab.studies.pages import hand_typed_numbers, replace_generated

PAGE = """# Title

Intro with no numbers.

<!-- begin generated: provenance -->
old provenance 0.123
<!-- end generated: provenance -->

Reading: GRPO reaches <!--v:entropy/grpo/pass@1-->0.111<!--/v--> and Clip_B
<!--v:entropy/clip_b/diff/pass@kmax-->+0.0 [0, 0]<!--/v-->.

<!-- begin generated: entropy/table -->
| stale |
<!-- end generated: entropy/table -->
"""


def _block(name):
    return {"provenance": "- fresh", "entropy/table": "| a |\n|---|\n| 1.500 |"}[name]


def _inline(key):
    return {"entropy/grpo/pass@1": "0.198", "entropy/clip_b/diff/pass@kmax": "+0.027 [+0.004, +0.050]"}[key]


def test_blocks_and_inline_values_are_rewritten_and_prose_kept():
    out = replace_generated(PAGE, _block, _inline, page="p.md")
    assert "old provenance" not in out and "| stale |" not in out
    assert "<!-- begin generated: provenance -->\n- fresh\n<!-- end generated: provenance -->" in out
    assert "<!--v:entropy/grpo/pass@1-->0.198<!--/v-->" in out
    assert "<!--v:entropy/clip_b/diff/pass@kmax-->+0.027 [+0.004, +0.050]<!--/v-->" in out
    assert out.startswith("# Title\n\nIntro with no numbers.\n")
    # idempotent: writing again from the same data gives the same page
    assert replace_generated(out, _block, _inline, page="p.md") == out


def test_unknown_block_or_value_names_the_page_and_the_marker():
    with pytest.raises(ValueError, match=r"p\.md: inline value 'entropy/x/pass@1'"):
        replace_generated("<!--v:entropy/x/pass@1-->1<!--/v-->", _block, _inline, page="p.md")
    with pytest.raises(ValueError, match=r"p\.md: generated block 'nope'"):
        replace_generated("<!-- begin generated: nope -->\nx\n<!-- end generated: nope -->", _block, _inline,
                          page="p.md")


def test_unbalanced_markers_are_an_error():
    with pytest.raises(ValueError, match="unbalanced"):
        replace_generated("<!-- begin generated: provenance -->\nx\n", _block, _inline, page="p.md")


def test_hand_typed_numbers_are_found_only_outside_generated_parts():
    assert hand_typed_numbers(PAGE) == []
    assert hand_typed_numbers(PAGE + "\nA typed 0.25 and 1.5x but not pass@64 or v0.1.\n") == ["0.25", "1.5"]
