"""The rating page: a local web page where people give the MAD loop's weak scores (``segmend rate RUN_DIR``).

:func:`create_app` builds the FastAPI app over one round of a run folder; :class:`RatingRound`
finds the round waiting for weak scores and guards every id and rater name; :class:`ScoreStore`
keeps each rater's scores in their own ``round_<r>/scores/<rater>.json`` (written atomically after
every key press, so a rater who comes back resumes where they stopped). Everything the page shows
comes from the run folder: the candidates' upright images (``images/<id>.jpg``) and the target's
predictions (``predictions/<id>.png``), blended server-side in the VOC palette.
"""

from segmend.rating.app import create_app
from segmend.rating.session import RatingError, RatingRound, RoundNotReady
from segmend.rating.store import ScoreStore

__all__ = ["RatingError", "RatingRound", "RoundNotReady", "ScoreStore", "create_app"]
