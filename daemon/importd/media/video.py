"""Video and audio: technical facts with pymediainfo, and a perceptual fingerprint of sampled frames.

Frames come from ffmpeg run as a subprocess rather than PyAV: a decoder that hangs or crashes on a
damaged file takes down a child process we can time out and kill, not our worker. The system's ffmpeg
(Debian's, patched with the rest of the system) comes first, else the static build the imageio-ffmpeg
wheel ships (media/ffmpeg.py chooses). With input seeking (`-ss` before `-i`) ffmpeg decodes only from
the keyframe before each sample position up to it, whatever the file's length; the positions are shared
between one ffmpeg per core, run at once. PyAV would save the ~50 ms process start-up per video, which
is noise next to decoding.

pymediainfo must not `parse` concurrently from threads with different options; we call it from
single-threaded pool workers only.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image
from pymediainfo import MediaInfo

from importd.media.failure import ExtractionFailure, describe
from importd.media.ffmpeg import Ffmpeg, current_ffmpeg
from importd.media.hashes import hamming, is_low_detail, perceptual_hashes
from importd.runtime import die_with_parent

AV_EXTRACTOR = "av"
FINGERPRINT_EXTRACTOR = "video_fp"

# Eight frames at the middle of eight equal slices of the running time: a shared intro, logo or black
# lead-in covers one or two samples at most, so it cannot make two different videos match.
FINGERPRINT_FRAMES = 8

# Mean pHash distance per compared frame at or below which two videos are near-duplicates. Measured in
# tests/unit/importd/media/test_video.py: a re-encode (MPEG-4 part 2 in AVI at 3/4 size from H.264) is at 0;
# different footage behind an identical 2.5 s black intro at 28, behind an identical 2 s colour-bar
# title card at 24.5. The same threshold as for still images (hash_index.NEAR_DUPLICATE_MAX_DISTANCE).
VIDEO_NEAR_MAX_DISTANCE = 10.0

# Two copies of one video differ in duration by container rounding and trailing frames only.
DURATION_TOLERANCE_S = 1.0
DURATION_TOLERANCE_RATIO = 0.02

_FRAME_SIDE = 64
# For all of one file's ffmpeg runs; below the pool's per-file limit so a stuck ffmpeg is killed by
# us, with a reason.
_FFMPEG_TIMEOUT_S = 60.0
# ffmpeg runs per fingerprint at most. Decoding from each keyframe to its sample is the whole cost (about
# 3.5 s of CPU for an hour-long 1080p H.264 film with 10 s keyframe intervals, bench section `camera`);
# runs on free cores share it out, which cuts the wall time, not the CPU.
_MAX_PROCESSES = 4


@dataclass(frozen=True, slots=True)
class AudioStream:
    codec: str
    channels: int | None


@dataclass(frozen=True, slots=True)
class AVFacts:
    """Technical metadata of a video or audio file. Absent values are None.

    `width`/`height` are as displayed (a 90° rotation flag swaps them). `bit_rate` is the overall bit
    rate in bit/s. `warnings` lists problems that did not stop the analysis, e.g. a truncated file.
    """

    container: str
    duration_s: float | None
    width: int | None
    height: int | None
    frame_rate: float | None
    frame_count: int | None
    video_codec: str | None
    bit_rate: int | None
    audio: tuple[AudioStream, ...]
    created_at: datetime | None
    warnings: tuple[str, ...] = ()

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None


@dataclass(frozen=True, slots=True)
class VideoFingerprint:
    """pHashes (signed 64-bit) of frames sampled at the middle of `len(frames)` equal slices.

    `blank[i]` marks a near-uniform frame (black, white, a flat title card): its hash carries no
    information, so two blank frames are not evidence that two videos are the same.
    `frames[i]` is None where the file gave no picture at that position.
    """

    duration_s: float
    frames: tuple[int | None, ...]
    blank: tuple[bool, ...]


def extract_av(path: str | bytes) -> AVFacts | ExtractionFailure:
    """Read a video or audio file's technical metadata; damaged or non-media files give a failure."""
    try:
        info = _parse(path)
    except Exception as error:  # libmediainfo loading or reading problems
        return ExtractionFailure(AV_EXTRACTOR, describe(error))
    general = info.general_tracks[0] if info.general_tracks else None
    truncated = general is not None and str(general.istruncated or "").lower() == "yes"
    # On random bytes, empty or mislabelled files pymediainfo raises nothing: it returns a General
    # track without a format, or a container with no audio/video streams (a JPEG named .mp4).
    if general is None or not general.format:
        return ExtractionFailure(AV_EXTRACTOR, "not a recognised audio or video container")
    video = info.video_tracks[0] if info.video_tracks else None
    audio = info.audio_tracks
    if video is None and not audio:
        if truncated:
            return ExtractionFailure(
                AV_EXTRACTOR, f"truncated {general.format} file: no stream survives (header incomplete)"
            )
        kinds = ", ".join(sorted({t.track_type for t in info.tracks} - {"General"})) or "nothing"
        return ExtractionFailure(
            AV_EXTRACTOR, f"{general.format} file without audio or video streams (contains {kinds})"
        )
    warnings = ("truncated: the file is shorter than its header declares",) if truncated else ()
    width, height = _int(video.width) if video else None, _int(video.height) if video else None
    if video is not None and _float(video.rotation) in (90.0, 270.0, -90.0):
        width, height = height, width
    duration_ms = _float(general.duration) or (_float(video.duration) if video else None)
    return AVFacts(
        container=str(general.format),
        duration_s=duration_ms / 1000.0 if duration_ms else None,
        width=width,
        height=height,
        frame_rate=_float(video.frame_rate) if video else None,
        frame_count=_int(video.frame_count) if video else None,
        video_codec=str(video.format) if video and video.format else None,
        bit_rate=_int(general.overall_bit_rate),
        audio=tuple(AudioStream(str(a.format or "unknown"), _int(a.channel_s)) for a in audio),
        created_at=_created_at(general),
        warnings=warnings,
    )


def video_fingerprint(
    path: str | bytes,
    duration_s: float,
    *,
    frames: int = FINGERPRINT_FRAMES,
    ffmpeg: Ffmpeg | None = None,
    processes: int | None = None,
) -> VideoFingerprint | ExtractionFailure:
    """Hash `frames` frames spread over the running time (`duration_s`, from `extract_av`), with
    `ffmpeg` (by default the one `media.ffmpeg` resolves for this process) in `processes` runs at once
    (by default one per core, at most `_MAX_PROCESSES`; the frames are the same either way)."""
    if not duration_s or duration_s <= 0:
        return ExtractionFailure(FINGERPRINT_EXTRACTOR, "unknown duration; cannot place sample frames")
    positions = [duration_s * (i + 0.5) / frames for i in range(frames)]
    binary = ffmpeg or current_ffmpeg()
    if binary.path is None:
        return ExtractionFailure(FINGERPRINT_EXTRACTOR, f"ffmpeg unavailable: {binary.problem}")
    try:
        pictures = _grab_frames(binary.path, path, positions, processes)
    except subprocess.TimeoutExpired:
        return ExtractionFailure(FINGERPRINT_EXTRACTOR, f"ffmpeg took longer than {_FFMPEG_TIMEOUT_S:g} s")
    except FfmpegError as error:
        return ExtractionFailure(FINGERPRINT_EXTRACTOR, str(error))
    except OSError as error:
        return ExtractionFailure(FINGERPRINT_EXTRACTOR, describe(error))
    got = [p for p in pictures if p is not None]
    if len(got) * 2 < frames:
        return ExtractionFailure(
            FINGERPRINT_EXTRACTOR, f"only {len(got)} of {frames} sample frames could be decoded"
        )
    hashes = tuple(None if p is None else perceptual_hashes(p)[0] for p in pictures)
    blank = tuple(p is None or is_low_detail(p) for p in pictures)
    return VideoFingerprint(duration_s=float(duration_s), frames=hashes, blank=blank)


def durations_compatible(
    a: float,
    b: float,
    *,
    tolerance_s: float = DURATION_TOLERANCE_S,
    tolerance_ratio: float = DURATION_TOLERANCE_RATIO,
) -> bool:
    return abs(a - b) <= max(tolerance_s, tolerance_ratio * max(a, b))


def fingerprint_distance(
    a: VideoFingerprint,
    b: VideoFingerprint,
    *,
    tolerance_s: float = DURATION_TOLERANCE_S,
    tolerance_ratio: float = DURATION_TOLERANCE_RATIO,
) -> float | None:
    """Mean pHash distance over corresponding frames, or None when the two cannot be compared.

    None means: durations differ beyond the tolerance, the sampling differs, or no frame pair carries
    information (both blank or missing at every position). Pairs where both frames are blank are left
    out, so a shared black intro neither helps nor hurts; a blank frame against a picture counts in full.
    """
    if len(a.frames) != len(b.frames):
        return None
    if not durations_compatible(
        a.duration_s, b.duration_s, tolerance_s=tolerance_s, tolerance_ratio=tolerance_ratio
    ):
        return None
    distances = [
        hamming(fa, fb)
        for fa, fb, ba, bb in zip(a.frames, b.frames, a.blank, b.blank, strict=True)
        if fa is not None and fb is not None and not (ba and bb)
    ]
    if not distances:
        return None
    return sum(distances) / len(distances)


class FfmpegError(Exception):
    pass


def _grab_frames(
    ffmpeg: str, path: str | bytes, positions: list[float], processes: int | None = None
) -> list[Image.Image | None]:
    """A 64×64 grey raw frame at each position, from `processes` ffmpeg runs at once (by default one
    per core, at most `_MAX_PROCESSES`), each taking a contiguous share of the positions.

    Each run has an input per position (fast input seeking) and decodes each on one thread, so a run's
    frames are the same whichever share it takes: splitting changes the wall time, not the pixels
    (tests/unit/importd/media/test_video.py compares them). Seeking lands on the keyframe before a
    position and decodes up to it, on average half a keyframe interval per position: at camera and film
    sizes that decoding is the whole cost, and it parallelises across positions, not inside one.
    """
    count = processes if processes is not None else _default_processes()
    shares = _split(positions, max(1, min(count, len(positions))))
    source: str | bytes = (b"file:" + path) if isinstance(path, bytes) else "file:" + path
    # "file:" stops ffmpeg reading "a:b.mp4" as protocol "a" or "-x.mp4" as an option.
    with tempfile.TemporaryDirectory(prefix="importd-frames-") as scratch:
        runs: list[tuple[subprocess.Popen[bytes], Path, list[Path]]] = []
        try:
            first = 0
            for k, share in enumerate(shares):
                outputs = [Path(scratch) / f"{first + i}.raw" for i in range(len(share))]
                first += len(share)
                log = Path(scratch) / f"stderr-{k}"
                runs.append((_start(_frames_command(ffmpeg, source, share, outputs), log), log, outputs))
            deadline = time.monotonic() + _FFMPEG_TIMEOUT_S
            for run, log, _ in runs:
                returncode = run.wait(timeout=max(0.0, deadline - time.monotonic()))
                if returncode != 0:
                    detail = log.read_bytes().decode("utf-8", "replace").strip().splitlines()
                    raise FfmpegError(f"ffmpeg exit {returncode}: {detail[-1] if detail else 'no message'}")
        finally:
            for run, _, _ in runs:
                if run.poll() is None:
                    run.kill()
                    run.wait()
        pictures: list[Image.Image | None] = []
        size = _FRAME_SIDE * _FRAME_SIDE
        for _, _, outputs in runs:
            for output in outputs:
                data = output.read_bytes() if output.exists() else b""
                pictures.append(
                    Image.frombytes("L", (_FRAME_SIDE, _FRAME_SIDE), data[:size])
                    if len(data) >= size
                    else None
                )
        return pictures


def _start(command: list[str | bytes], log: Path) -> subprocess.Popen[bytes]:
    # stderr goes to a file, not a pipe: a chatty run cannot block while we wait for another.
    with open(log, "wb") as errors:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            preexec_fn=die_with_parent,  # a worker killed for overrunning takes its ffmpeg along
        )


def _frames_command(
    ffmpeg: str, source: str | bytes, positions: list[float], outputs: list[Path]
) -> list[str | bytes]:
    command: list[str | bytes] = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
    for position in positions:
        # One decoding thread per input: frame threads cost 40 % more CPU here for these few frames;
        # several runs share the positions instead.
        command += ["-threads", "1", "-ss", f"{position:.3f}", "-i", source]
    graph = ";".join(
        f"[{i}:v:0]scale={_FRAME_SIDE}:{_FRAME_SIDE}:flags=area,format=gray[f{i}]"
        for i in range(len(positions))
    )
    command += ["-filter_complex", graph]
    for i, output in enumerate(outputs):
        command += ["-map", f"[f{i}]", "-frames:v", "1", "-f", "rawvideo", str(output)]
    return command


def _split(positions: list[float], parts: int) -> list[list[float]]:
    """`parts` contiguous shares of `positions`, as equal as can be, in order."""
    base, extra = divmod(len(positions), parts)
    shares, start = [], 0
    for k in range(parts):
        end = start + base + (1 if k < extra else 0)
        shares.append(positions[start:end])
        start = end
    return shares


def _default_processes() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_PROCESSES))


def _parse(path: str | bytes) -> Any:
    if isinstance(path, str):
        return MediaInfo.parse(path)
    try:
        return MediaInfo.parse(path.decode("utf-8"))
    except UnicodeDecodeError:
        # libmediainfo takes a wide-character name, which a non-UTF-8 file name cannot become; it
        # reads a Python file object instead.
        with open(path, "rb") as stream:
            return MediaInfo.parse(stream)


def _int(value: object) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _float(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).split("/")[0].split()[0] if str(value).strip() else ""
    try:
        return float(text)
    except ValueError:
        return None


def _created_at(general: Any) -> datetime | None:
    for field in ("recorded_date", "encoded_date", "tagged_date"):
        moment = _mediainfo_datetime(getattr(general, field, None))
        if moment is not None:
            return moment
    return None


def _mediainfo_datetime(value: object) -> datetime | None:
    """MediaInfo writes "2024-05-06 07:08:09 UTC" (older: "UTC 2024-05-06 07:08:09"), or ISO 8601."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    utc = "UTC" in text
    text = text.replace("UTC", "").strip().replace("T", " ").rstrip("Z")
    for pattern in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            moment = datetime.strptime(text, pattern)
        except ValueError:
            continue
        if moment.year <= 1904:  # QuickTime's epoch: the field was never set
            return None
        return moment.replace(tzinfo=UTC) if utc else moment
    return None
