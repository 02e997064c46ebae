"""The README's main job at small scale: corpus -> tokenizer -> data -> train -> convert -> generate."""
import json
import re
import subprocess
import sys

from mfcore.cli.demo_corpus import ANIMALS, COLORS, NAMES, PLACES, TEMPLATES, THINGS, VERBS_PAST, WEATHER

GRAMMAR_WORDS = {w.lower() for w in NAMES + ANIMALS + COLORS + PLACES + THINGS + VERBS_PAST + WEATHER}
GRAMMAR_WORDS |= {w.lower() for t in TEMPLATES for w in re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", t))}


def grammar_fraction(texts):
    """Share of generated words that exist in the corpus grammar (prompts excluded)."""
    words = [w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)[3:]]
    return sum(w in GRAMMAR_WORDS for w in words) / max(len(words), 1)


def test_demo_trains_converts_and_generates_better_text(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "mfcore", "demo", "--output-dir", str(out), "--steps", "80",
                             "--documents", "1500"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["last_loss"] < summary["first_loss"] * 0.6
    assert summary["round_trip_tensors"] > 0
    assert grammar_fraction(summary["after"]) > 0.9 > grammar_fraction(summary["before"])
    for step in ("[1]", "[3]", "[5]", "[6]", "[7]"):
        assert step in result.stdout
