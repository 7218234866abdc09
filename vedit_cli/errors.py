"""User-facing errors: each one is a single actionable line; the CLI maps them to exit code 1."""


class VeditError(Exception):
    """Base of every error a user can cause or fix; never a bug."""


class ConfigError(VeditError):
    """An option or combination of options is invalid."""


class InputVideoError(VeditError):
    """An input file is missing, unreadable, or holds no decodable video."""


class OutputError(VeditError):
    """The output cannot be written where asked (exists, unwritable, equals the input)."""


class EncodeError(VeditError):
    """ffmpeg failed while encoding or muxing; carries ffmpeg's stderr tail."""


class WeightsMissingError(VeditError):
    """A checkpoint folder a backend needs is absent or incomplete."""


class WeightsIntegrityError(VeditError):
    """A checkpoint file does not match its recorded checksum, or is not safetensors."""


class DownloadError(VeditError):
    """The hub could not be reached or refused a download."""


class FrameCountError(VeditError):
    """Frames written differ from frames read: the output would be wrong, so it is not kept."""


class EvaluationError(VeditError):
    """A metric could not be computed, or a threshold is malformed."""


class TrainingDataError(VeditError):
    """Training data is missing, unreadable, or has no usable sample (single bad samples are skipped, not raised)."""


class UnusedOptionError(ConfigError):
    """An option the chosen backend does not use was given: a usage error, so the CLI exits 2 (not 1)."""

    exit_code = 2
