"""The claim as an ASC X12 005010X222A1 837P professional claim (docs/output.md, X12 837P).

- `settings`: the site's X12 configuration (submitter, receiver, delimiters, usage indicator);
- `charges`: the chargemaster (what each code is charged);
- `content`: the decision → the values of each 837P element, and the elements the record lacks;
- `control`: control numbers and the claims sent, in a locked state file (frequency codes);
- `interchange`: the content → the interchange, built with x12sdk's typed models;
- `writer`: the format's findings (`x12_requirements`) and the registered writer (`X12Writer`).
"""

from .settings import Overrides, X12Settings, load_settings
from .writer import MEDIA_TYPE, X12Options, X12Writer, x12_requirements

__all__ = ["MEDIA_TYPE", "Overrides", "X12Options", "X12Settings", "X12Writer", "load_settings", "x12_requirements"]
