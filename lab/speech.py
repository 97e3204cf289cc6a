"""Local speech engines for the lab: espeak-ng speaks, pocketsphinx listens.

Both run offline on the control node. espeak-ng (Debian) speaks a sentence in 15-45 ms; sox
resamples its 22,050 Hz output to the rate asked for. pocketsphinx (PyPI, with its bundled en-us
model) decodes against a JSGF grammar of the phrases the lab can hear: exact in ~30 ms an
utterance, where its open vocabulary is poor on synthetic speech (../shared/docs/field-notes.md
§4). A grammar cannot hear a phrase it does not list: an utterance outside it decodes to the
closest listed phrase or to nothing, which the caller's checks treat as a wrong answer.

Not covered: voices other than espeak-ng's en-us, languages other than English, noisy audio.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

VOICE = "en-us"
WORDS_PER_MINUTE = 160
SAMPLE_WIDTH = 2  # s16le


class SpeechError(RuntimeError):
    pass


def normalise(text: str) -> str:
    """Lower case words only: how phrases are compared and put into grammars."""
    return " ".join(re.findall(r"[a-z']+", text.lower()))


def synthesize(text: str, sample_rate: int) -> bytes:
    """`text` spoken by espeak-ng as mono s16le PCM at `sample_rate`."""
    try:
        wav = subprocess.run(
            ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "--stdout", text],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        pcm = subprocess.run(
            [
                "sox",
                "-t",
                "wav",
                "-",
                "-t",
                "raw",
                "-r",
                str(sample_rate),
                "-e",
                "signed",
                "-b",
                "16",
                "-c",
                "1",
                "-",
            ],
            input=wav,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except FileNotFoundError as e:
        raise SpeechError(
            f"{e.filename} is not installed (apt-get install espeak-ng sox)"
        ) from None
    except subprocess.CalledProcessError as e:
        raise SpeechError(f"{e.cmd[0]} failed: {e.stderr.decode(errors='replace')[:200]}") from None
    return pcm


def rms(pcm: bytes | np.ndarray) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, bytes | bytearray) else pcm
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float32) ** 2)))


def jsgf(phrases: Iterable[str]) -> str:
    """A JSGF grammar that accepts exactly one of `phrases` (normalised)."""
    alternatives = sorted({normalise(p) for p in phrases if normalise(p)})
    if not alternatives:
        raise ValueError("a grammar needs at least one phrase")
    body = " | ".join(f"( {a} )" for a in alternatives)
    return f"#JSGF V1.0;\ngrammar lab;\npublic <phrase> = {body};\n"


class Recognizer:
    """pocketsphinx restricted to a set of phrases.

    `decode(pcm)` takes a whole utterance; `stream()` decodes incrementally (partial
    hypotheses while audio arrives, the final one at `end()`), as a streaming recognizer does.
    Decoders are pooled: each utterance in progress holds one, so streams may run in parallel
    (in threads), and a decoder is built (~0.2 s) only when all are busy.
    """

    def __init__(self, phrases: Iterable[str], sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self.phrases = sorted({normalise(p) for p in phrases if normalise(p)})
        self._dir = tempfile.TemporaryDirectory(prefix="lab-grammar-")
        self._grammar = Path(self._dir.name) / "phrases.gram"
        self._grammar.write_text(jsgf(self.phrases))
        self._idle: list[object] = []
        self._lock = threading.Lock()
        self._primer_pcm: bytes | None = None

    def acquire(self):  # noqa: ANN201 (pocketsphinx has no type hints)
        with self._lock:
            if self._idle:
                return self._idle.pop()
        from pocketsphinx import Decoder  # only processes that listen need it

        # dither: synthetic speech has stretches of digital zero that break the features
        decoder = Decoder(
            jsgf=str(self._grammar), samprate=self.sample_rate, loglevel="FATAL", dither=True
        )
        # Live cepstral mean normalisation starts from a generic prior and learns from each
        # utterance: a fresh decoder cut the last words of its first utterance now and then.
        # One spoken phrase (and a silence) sets it.
        decoder.start_utt()
        decoder.process_raw(self._primer(), full_utt=True)
        decoder.end_utt()
        return decoder

    def _primer(self) -> bytes:
        if self._primer_pcm is None:
            silence = b"\0" * (self.sample_rate // 2) * SAMPLE_WIDTH
            self._primer_pcm = synthesize(self.phrases[0], self.sample_rate) + silence
        return self._primer_pcm

    def release(self, decoder) -> None:  # noqa: ANN001
        with self._lock:
            self._idle.append(decoder)

    def decode(self, pcm: bytes) -> str:
        stream = self.stream()
        stream.feed(pcm)
        return stream.end()

    def stream(self) -> Stream:
        return Stream(self)


class Stream:
    """One utterance, decoded as it arrives (feed and end from one thread at a time)."""

    def __init__(self, recognizer: Recognizer) -> None:
        self._r = recognizer
        self._d = recognizer.acquire()
        self._d.start_utt()
        self.samples = 0
        self.text = ""

    def feed(self, pcm: bytes) -> str:
        self._d.process_raw(pcm, full_utt=False)
        self.samples += len(pcm) // SAMPLE_WIDTH
        hyp = self._d.hyp()
        self.text = hyp.hypstr if hyp is not None else ""
        return self.text

    def end(self) -> str:
        self._d.end_utt()
        hyp = self._d.hyp()
        self.text = hyp.hypstr if hyp is not None else ""
        self._r.release(self._d)
        return self.text
