"""Model-as-judge complexity (the paper's MASJ baselines): a judge model rates each question's education
level or number of reasoning steps, ending with a fixed marker that is parsed strictly. A judgement without
the marker, or with a value outside the scale, is recorded as malformed — never as a level."""

from __future__ import annotations

import re

from caft.prompts import render_options

SCALES = {
    "education_level": ("high school and easier", "undergraduate", "graduate", "postgraduate"),
    "reasoning_steps": ("low", "medium", "high"),
}
MARKERS = {"education_level": "Level", "reasoning_steps": "Steps"}
QUESTIONS = {
    "education_level": "What is the minimal education level needed to answer this question correctly?",
    "reasoning_steps": "How many reasoning steps does answering this question correctly require?",
}


def messages(kind: str, question: str, options: list[str]) -> list[dict[str, str]]:
    scale = ", ".join(SCALES[kind])
    what = "multiple choice questions" if options else "questions"
    system = (
        f"You rate the complexity of {what}. Do not answer the question. "
        f"{QUESTIONS[kind]} Choose one of: {scale}. End with a line '{MARKERS[kind]}: <your choice>'."
    )
    user = f"Question: {question}"
    if options:
        user += f"\nOptions:\n{render_options(options, 'letter')}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse(kind: str, text: str) -> int | None:
    """The 0-based level named by the last `<Marker>: <value>` line, or None (malformed)."""
    values = "|".join(re.escape(v) for v in sorted(SCALES[kind], key=len, reverse=True))
    hits = re.findall(rf"{MARKERS[kind]}\s*:\s*\**\s*({values})\b\s*\**\s*\.?\s*$", text, re.IGNORECASE | re.MULTILINE)
    if not hits:
        return None
    return [v.lower() for v in SCALES[kind]].index(hits[-1].lower())
