"""The Qt desktop app: one window with Data, Train, Review and Runs pages bound to the ``core`` engine.

Nothing here trains or reads datasets by itself: pages call ``core`` functions on background threads
(``gui.workers``) and draw the plain events those functions emit.
"""

from gui.refcount_fix import make_singletons_immortal

_SINGLETONS_PROTECTED = make_singletons_immortal()
