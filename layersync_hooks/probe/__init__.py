"""The probe: block-by-block similarity of a model's target tokens, and the student/teacher pairs it suggests.

`probe(model, batches)` measures; `forward_inputs` builds inputs for the classes it knows (others take saved
keyword arguments, `save_forward_kwargs`); `save_report` / `print_report` write and show the result.
"""

from .inputs import INPUT_BUILDERS, ProbeSize, forward_inputs, load_forward_kwargs, save_forward_kwargs
from .measure import ProbeResult, load_model, probe, read_model_config
from .report import REPORT_FILES, plot_heatmap, print_report, save_report
from .similarity import Recommendation, cosine_matrix, linear_cka_matrix, recommend

__all__ = [
    "INPUT_BUILDERS",
    "REPORT_FILES",
    "ProbeResult",
    "ProbeSize",
    "Recommendation",
    "cosine_matrix",
    "forward_inputs",
    "linear_cka_matrix",
    "load_forward_kwargs",
    "load_model",
    "plot_heatmap",
    "print_report",
    "probe",
    "read_model_config",
    "recommend",
    "save_forward_kwargs",
    "save_report",
]
