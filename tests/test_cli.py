"""`python -m editor edit`: prints the expressive instruction, writes the image; errors are one clear line."""

from PIL import Image

from editor.__main__ import main


def test_edit_writes_the_output(tiny_tree, tmp_path, capsys):
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.new("RGB", (100, 50), (20, 120, 220)).save(src)
    code = main(["edit", str(src), "make it red", "-o", str(out), "--weights-dir", str(tiny_tree), "--steps", "2",
                 "--size", "64", "--seed", "5", "--device", "cpu"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "expressive instruction:" in printed and "seed 5" in printed
    assert Image.open(out).size == (64, 32)


def test_user_expressive_text_is_used(tiny_tree, tmp_path, capsys):
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.new("RGB", (64, 64)).save(src)
    assert main(["edit", str(src), "make it red", "-o", str(out), "--weights-dir", str(tiny_tree), "--steps", "1",
                 "--size", "64", "--expressive", "The black square turns red."]) == 0  # fmt: skip
    assert "expressive instruction: The black square turns red." in capsys.readouterr().out


def test_missing_weights_give_the_download_command(tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(src)
    out = str(tmp_path / "o.png")
    assert main(["edit", str(src), "x", "-o", out, "--weights-dir", str(tmp_path / "none"), "--model", "mgie-7b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: folder not found") and "python -m editor.weights download mgie-7b" in err


def test_without_any_model_the_cli_uses_the_demo_and_says_so(tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(src)
    out = tmp_path / "o.png"
    assert main(["edit", str(src), "red", "-o", str(out), "--weights-dir", str(tmp_path), "--steps", "1"]) == 0
    assert "offline demo model" in capsys.readouterr().err and Image.open(out).size == (64, 64)


def test_bad_inputs_fail_before_loading_anything(tmp_path, capsys):
    src = tmp_path / "in.png"
    Image.new("RGB", (8, 8)).save(src)
    assert main(["edit", str(src), "x", "-o", str(tmp_path / "o.xyz"), "--weights-dir", str(tmp_path)]) == 2
    assert "unknown image format" in capsys.readouterr().err
    assert main(["edit", str(src), "x", "-o", str(tmp_path / "o.png"), "--steps", "0"]) == 2
    assert "steps must be an integer" in capsys.readouterr().err
