import json

import pytest

from easytune.readme_tables import main, render, replace_block


def test_tables_come_from_the_reports(tmp_path):
    (tmp_path / "evaluation_metrics.json").write_text(json.dumps(
        {"real": {"R@1": {"mean": 0.5, "ci": 0.01}}, "easytune_step": {"R@1": {"mean": 0.25, "ci": 0.02}}}))
    (tmp_path / "finetune_report.json").write_text(json.dumps({"easytune_step": {"updates": 600, "wall_s": 12.5}}))
    body = render(tmp_path)
    assert "| easytune_step | 0.250 ± 0.020 |" in body and "| easytune_step | 600 | 12.500 |" in body
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:demo:begin -->\nold\n<!-- results:demo:end -->\ny\n")
    main(["--reports", str(tmp_path), "--name", "demo", "--readme", str(readme)])
    text = readme.read_text()
    assert "old" not in text and "0.250 ± 0.020" in text and text.startswith("x\n") and text.endswith("y\n")


def test_missing_block_is_an_error():
    with pytest.raises(SystemExit, match="no block"):
        replace_block("nothing here", "demo", "body")
