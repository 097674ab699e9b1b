"""Errors a user can cause. Each names the file/node/field at fault and what to do.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``.
"""


class HwcompileError(Exception):
    """Base class of every error hwcompile raises for bad user input."""

    exit_code = 2


class ModelLoadError(HwcompileError):
    """The model file is missing, not ONNX, truncated or invalid."""


class UnsupportedOpError(HwcompileError):
    """The model uses operators the frontend cannot import."""


class InputError(HwcompileError):
    """Run-time inputs have the wrong name, shape or dtype, or are missing."""


class PassError(HwcompileError):
    """Unknown pass, bad pass option, or a pass that cannot apply to this model."""


class TargetError(HwcompileError):
    """Unknown target, bad target option, or a target that cannot build this model."""


class ArtifactError(HwcompileError):
    """An artifact directory is missing files, corrupt, or from another schema/version."""


class CalibrationError(HwcompileError):
    """Calibration data is missing, empty, or does not match the model's inputs."""


class TuningError(HwcompileError):
    """Tuning failed or produced no valid measurement."""


class VTAError(HwcompileError):
    """Invalid VTA configuration, instruction or program, or a simulator fault."""
