"""The lab's conversation: what callers say and what the LLM stand-in answers.

One table serves three parties, so they always agree: the LLM stand-in (lab/providers/openai.py)
answers by these rules, the Deepgram stand-in's recognizer listens for the caller lines, and the
caller's own recognizer listens for the answers and checks each one against the rule for the
line it spoke. Short, common words: pocketsphinx's dictionary spells them the way espeak-ng
says them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .speech import normalise


@dataclass(frozen=True)
class Rule:
    line: str  # what a caller says
    keywords: tuple[str, ...]  # any of these in the caller's words selects the rule
    answer: str  # what the agent says back
    ends_call: bool = False  # the stand-in calls the end_call tool instead of answering


GREETING = Rule("hello can you hear me", ("hello", "hear"), "yes I can hear you")
QUESTIONS = (
    Rule("what is the weather today", ("weather",), "it is sunny and warm today"),
    Rule("what time is it", ("time",), "it is half past ten"),
    Rule("how are you", ("how",), "I am fine thank you"),
    Rule("tell me a joke", ("joke",), "I am not good at jokes"),
    Rule("where are you", ("where",), "I am in the lab"),
)
GOODBYE = Rule("thank you goodbye", ("goodbye", "bye"), "goodbye and have a nice day", True)
RULES = (GOODBYE, GREETING, *QUESTIONS)  # goodbye first: "thank you goodbye" ends the call
FALLBACK = "sorry I did not understand"

CALLER_PHRASES = tuple(r.line for r in RULES)
AGENT_PHRASES = (*(r.answer for r in RULES), FALLBACK)


def rule_for(text: str) -> Rule | None:
    words = set(normalise(text).split())
    return next((r for r in RULES if words & set(r.keywords)), None)


def answer_for(text: str) -> str:
    rule = rule_for(text)
    return rule.answer if rule is not None else FALLBACK


def script(questions: int, rng: random.Random | None = None) -> list[Rule]:
    """A call: the greeting, `questions` questions (repeating when more than there are), goodbye."""
    rng = rng or random.Random(0)
    asked = [
        QUESTIONS[(i + rng.randrange(len(QUESTIONS))) % len(QUESTIONS)] for i in range(questions)
    ]
    return [GREETING, *asked, GOODBYE]
