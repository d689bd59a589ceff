"""Media files of a sample set: PNG images and MP4 videos (PyAV, i.e. FFmpeg's libraries), uint8 RGB or grey.

Arrays here are channels-last uint8: images ``H×W×C``, videos ``T×H×W×C`` with ``C`` in 1 or 3.

Video encodings (:data:`VIDEO_QUALITIES`):

- ``"lossless"`` (default): H.264 through ``libx264rgb`` with ``crf=0`` on ``rgb24`` frames (High 4:4:4 Predictive
  profile). No colour conversion and no chroma subsampling, so frames read back bit-exact (tested). Files are
  large for noise-like content and some players cannot show 4:4:4 H.264; metrics read them with PyAV.
- ``"high"``: H.264 ``libx264``, ``yuv420p``, ``crf=12``, ``preset=medium``: near-lossless, plays everywhere,
  a fraction of the size. The RGB→YUV 4:2:0 round trip changes pixel values (chroma is shared by 2×2 blocks):
  measured mean absolute error 4.7 grey levels on blurred colour noise (σ = 3 px, 64×96), 45 on per-pixel random
  noise. Use it for viewing, not for the numbers of a study.

Grey (``C = 1``) frames are written as RGB with equal channels and read back as one channel when asked.
Frames must have even height and width for ``"high"`` (4:2:0); ``"lossless"`` takes any size.
Every error names the file and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_QUALITIES: dict[str, dict[str, Any]] = {
    "lossless": {"codec": "libx264rgb", "pix_fmt": "rgb24", "options": {"crf": "0", "preset": "medium"}},
    "high": {"codec": "libx264", "pix_fmt": "yuv420p", "options": {"crf": "12", "preset": "medium"}},
}
DEFAULT_FPS = 16  # Wan2.1 / Wan2.2 write 16 fps


class MediaError(ValueError):
    """A media file is missing, unreadable, or does not hold what the manifest says."""


def _check_uint8(frame: np.ndarray, what: str, ndim: int) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise MediaError(f"{what}: expected uint8 pixels, got {arr.dtype} (convert with to_uint8 first)")
    if arr.ndim != ndim or arr.shape[-1] not in (1, 3):
        layout = "H×W×C" if ndim == 3 else "T×H×W×C"
        raise MediaError(f"{what}: expected a {layout} array with C in (1, 3), got shape {arr.shape}")
    return arr


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] → uint8 by rounding ``x·255`` (uint8 input is returned unchanged)."""
    arr = np.asarray(x)
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float32, copy=False)
    if arr.size and (not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0):
        raise MediaError(f"float pixels must be finite and lie in [0, 1], got range [{arr.min():.3g}, {arr.max():.3g}]")
    return np.round(arr * 255.0).astype(np.uint8)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an ``H×W×C`` uint8 image (C = 1 grey, 3 RGB) as PNG (lossless)."""
    from PIL import Image

    arr = _check_uint8(image, str(path), 3)
    out = Path(path)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(out, format="PNG")
    return out


def read_png(path: str | Path, channels: int | None = None) -> np.ndarray:
    """``H×W×C`` uint8; ``channels`` 1 or 3 converts (None keeps the file's grey/RGB)."""
    from PIL import Image, UnidentifiedImageError

    src = Path(path)
    if not src.is_file():
        raise MediaError(f"image file {src} is missing: re-write the sample or remove its manifest line")
    try:
        with Image.open(src) as img:
            img.load()
            mode = {1: "L", 3: "RGB"}.get(channels or (1 if img.mode in ("L", "I;16", "1") else 3))
            arr = np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise MediaError(f"image file {src} is corrupt or not a PNG ({err}): re-write the sample") from err
    return arr[..., None] if arr.ndim == 2 else arr


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    height: int
    width: int
    fps: float


class VideoWriter:
    """Append frames one by one to an MP4 (context manager); memory holds one frame at a time.

    >>> with VideoWriter("clip.mp4", fps=16) as w:
    ...     for frame in frames:  # H×W×C uint8
    ...         w.write(frame)
    """

    def __init__(self, path: str | Path, fps: float = DEFAULT_FPS, quality: str = "lossless"):
        if quality not in VIDEO_QUALITIES:
            raise MediaError(f"quality={quality!r} must be one of {sorted(VIDEO_QUALITIES)}")
        self.path, self.fps, self.quality = Path(path), fps, quality
        self._container: Any = None
        self._stream: Any = None
        self.frames = 0
        self.shape: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, height: int, width: int) -> None:
        import av

        spec = VIDEO_QUALITIES[self.quality]
        if spec["pix_fmt"] == "yuv420p" and (height % 2 or width % 2):
            raise MediaError(
                f"{self.path}: quality='high' (4:2:0) needs even height and width, got {height}×{width}; "
                "use quality='lossless'"
            )
        self._container = av.open(str(self.path), mode="w", format="mp4")
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream(spec["codec"], rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = spec["pix_fmt"]
        stream.options = dict(spec["options"])
        self._stream = stream
        self.shape = (height, width)

    def write(self, frame: np.ndarray) -> None:
        import av

        arr = _check_uint8(frame, f"frame {self.frames} of {self.path}", 3)
        if self._container is None:
            self._open(arr.shape[0], arr.shape[1])
        if arr.shape[:2] != self.shape:
            raise MediaError(f"{self.path}: frame {self.frames} is {arr.shape[:2]}, earlier frames {self.shape}")
        rgb = np.ascontiguousarray(np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr)
        video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        assert self._stream is not None and self._container is not None
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        assert self._stream is not None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = DEFAULT_FPS,
                quality: str = "lossless") -> int:
    """Write ``T×H×W×C`` uint8 frames (an array or any iterable of ``H×W×C`` frames); returns the frame count."""
    with VideoWriter(path, fps, quality) as writer:
        for frame in frames:
            writer.write(frame)
        count = writer.frames
    if count == 0:
        raise MediaError(f"{path}: no frames given; a video needs at least one")
    return count


def _open_video(path: Path):  # type: ignore[no-untyped-def]
    import av

    if not path.is_file():
        raise MediaError(f"video file {path} is missing: re-write the sample or remove its manifest line")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, OSError) as err:
        raise MediaError(f"video file {path} is corrupt or not a video ({err}): re-write the sample") from err
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path} has no video stream: re-write the sample")
    return container


def iter_video_frames(path: str | Path, channels: int = 3) -> Iterator[np.ndarray]:
    """Decode frames one at a time as ``H×W×C`` uint8 (C = ``channels``, 1 or 3)."""
    import av

    src = Path(path)
    container = _open_video(src)
    try:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            yield rgb[..., :1] if channels == 1 else rgb
    except av.error.FFmpegError as err:
        raise MediaError(f"video file {src} is corrupt ({err}): re-write the sample") from err
    finally:
        container.close()


def read_video(path: str | Path, channels: int = 3, frames: int | None = None) -> np.ndarray:
    """The whole clip as ``T×H×W×C`` uint8. ``frames`` (the manifest's count) is checked when given."""
    arr = [f for f in iter_video_frames(path, channels)]
    if not arr:
        raise MediaError(f"video file {path} decodes to no frames: re-write the sample")
    if frames is not None and len(arr) != frames:
        raise MediaError(f"video file {path} has {len(arr)} frames but the manifest says {frames}: the file is "
                         "truncated or was replaced; re-write the sample")
    return np.stack(arr)


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, size and frame rate from the container header (no decoding)."""
    src = Path(path)
    container = _open_video(src)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        return VideoInfo(int(stream.frames), int(stream.codec_context.height), int(stream.codec_context.width), rate)
    finally:
        container.close()
