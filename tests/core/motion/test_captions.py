"""Caption lines (HumanML3D format and plain text), caption files with bad content, the counted-skip log."""

import logging

import pytest

from easytune.core.motion.captions import (
    Caption,
    CaptionFormatError,
    InputLimits,
    SkipLog,
    format_caption_line,
    parse_caption_line,
    read_caption_file,
    simple_tokens,
)


def test_parse_humanml3d_line_and_plain_text():
    cap = parse_caption_line("a man kicks with his left leg.#a/DET man/NOUN kick/VERB#0.0#0.0\n")
    assert cap == Caption("a man kicks with his left leg.", 0.0, 0.0, "a/DET man/NOUN kick/VERB")
    assert cap.whole_clip
    sub = parse_caption_line("a person waves#a/DET person/NOUN wave/VERB#1.5#3.26")
    assert not sub.whole_clip and sub.frame_range(20.0) == (30, 65)
    plain = parse_caption_line("  someone jumps twice  ")
    assert plain == Caption("someone jumps twice") and plain.whole_clip


@pytest.mark.parametrize("line, message", [
    ("only#three#fields", "4 '#'-separated"),
    ("a#b#c#d#e", "4 '#'-separated"),
    ("text#tok#zero#1.0", "non-numeric"),
    ("text#tok#2.0#1.0", "not after"),
    ("text#tok#1.0#1.0", "not after"),
    ("text#tok#-1.0#2.0", ">= 0"),
    ("text#tok#nan#2.0", "finite"),
    ("#tok#0.0#0.0", "empty caption"),
])
def test_malformed_lines_raise(line, message):
    with pytest.raises(CaptionFormatError, match=message):
        parse_caption_line(line)


def test_read_file_skips_malformed_lines_and_counts(tmp_path, caplog):
    path = tmp_path / "a.txt"
    path.write_text("good one#good/X one/X#0.0#0.0\nbad#line\n\nplain caption\ntext#t#3#1\n", encoding="utf-8")
    skips = SkipLog()
    with caplog.at_level(logging.WARNING):
        caps = read_caption_file(path, skips)
    assert [c.text for c in caps] == ["good one", "plain caption"]
    assert skips.as_dict() == {"malformed_caption_line": 2}
    assert f"{path}:2" in caplog.text and f"{path}:5" in caplog.text  # the warning names file and line


def test_read_file_non_utf8_empty_and_missing(tmp_path):
    skips = SkipLog()
    bad = tmp_path / "latin.txt"
    bad.write_bytes("une personne saute \xe9nergiquement#x#0.0#0.0".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert read_caption_file(bad, skips) == []
    assert read_caption_file(empty, skips) == []
    assert read_caption_file(tmp_path / "missing.txt", skips) == []
    assert skips.as_dict() == {"empty_caption_file": 1, "text_not_utf8": 1, "unreadable_text": 1}
    assert skips.total == 3


def test_skiplog_limits_warnings_but_counts_all(caplog):
    skips = SkipLog(max_warnings=2)
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            skips.skip("non_finite", f"clip_{i}.npy", "NaN")
        skips.summary()
    assert skips.as_dict() == {"non_finite": 5}
    assert "clip_0.npy" in caplog.text and "clip_1.npy" in caplog.text and "clip_4.npy" not in caplog.text
    assert "5 skips in total (3 warnings not shown)" in caplog.text


def test_format_round_trip_and_tokens():
    line = format_caption_line("A person walks forward, slowly.")
    assert line == "A person walks forward, slowly.#a/X person/X walks/X forward/X slowly/X#0.0#0.0"
    assert parse_caption_line(line).text == "A person walks forward, slowly."
    assert parse_caption_line(format_caption_line("x y", 1.0, 2.5)).frame_range(20) == (20, 50)
    assert simple_tokens("it's a jump!") == "it's/X a/X jump/X"
    with pytest.raises(ValueError):
        format_caption_line("bad # caption")


def test_caption_limits_skip_long_lines_naming_file_and_line_and_keep_the_others(tmp_path, caplog):
    path = tmp_path / "long.txt"
    long_text = "a person walks " + "very " * 300  # 1,515 characters, 303 words
    path.write_text(f"a person runs#x#0.0#0.0\n{long_text}#x#0.0#0.0\n{'go ' * 60}\n", encoding="utf-8")
    skips = SkipLog()
    with caplog.at_level(logging.WARNING):
        caps = read_caption_file(path, skips, InputLimits(max_caption_chars=1000, max_caption_words=50))
    assert [c.text for c in caps] == ["a person runs"]
    assert skips.as_dict() == {"caption_too_long": 1, "caption_too_many_words": 1}
    assert f"{path}:2" in caplog.text and "1514 characters > max_caption_chars 1000" in caplog.text
    assert f"{path}:3" in caplog.text and "60 words > max_caption_words 50" in caplog.text


def test_caption_file_over_the_size_limit_is_not_read(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("a person runs#x#0.0#0.0\n" * 100, encoding="utf-8")  # 2,400 bytes
    skips = SkipLog()
    assert read_caption_file(path, skips, InputLimits(max_text_file_bytes=1000)) == []
    assert skips.as_dict() == {"text_file_too_large": 1}
    assert len(read_caption_file(path, SkipLog(), InputLimits(max_text_file_bytes=2400))) == 100


def test_default_caption_limit_stays_below_what_text_embeddings_store():
    from easytune.core.data.dataset import MAX_STORED_CAPTION_CHARS
    from easytune.core.infra.config import ConfigError, from_dict

    assert InputLimits().max_caption_chars <= MAX_STORED_CAPTION_CHARS
    with pytest.raises(ConfigError, match=r"limits.max_caption_chars = 20000: must be in \[1, 10000\]"):
        from_dict(InputLimits, {"max_caption_chars": 20000}, where="data_processing.limits")
