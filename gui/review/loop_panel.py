"""The Review page's *Review loop* panel: what to correct next, and retraining on the corrections.

* *Rank by uncertainty* predicts every case-day with the chosen run and ranks them
  (``core.uncertainty``); *Next to review* (N) opens the most uncertain slice nobody has reviewed or
  corrected yet.
* *Fine-tune on corrections* asks the window to start a fine-tune of the chosen run
  (``core.finetune``) on the Train page; when it ends, the page shows both runs' scores and C
  switches between them on the same slice.

Controls only: the page runs the work and decides what is enabled.
"""

from __future__ import annotations

from PySide6.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout


class LoopPanel(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Review loop", parent)
        self.rank_button = QPushButton("Rank by uncertainty")
        self.rank_button.setToolTip("Predict every case-day with the chosen run and rank the "
                                    "slices by its uncertainty (mean entropy of its probabilities), "
                                    "most uncertain first")
        self.next_button = QPushButton("Next to review (N)")
        self.next_button.setToolTip("Open the most uncertain slice not yet reviewed (V) or "
                                    "corrected (ranks first if needed)")
        self.finetune_button = QPushButton("Fine-tune on corrections…")
        self.finetune_button.setObjectName("primary")
        self.finetune_button.setToolTip(
            "A new run from the chosen run's best weights, on the dataset with your corrections, "
            "with a short schedule (a quarter of its epochs, a third of its learning rate). When "
            "it ends both runs are scored on the corrected truth, side by side.")
        self.status = QLabel("")
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.rank_button)
        row.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.finetune_button)
        layout.addWidget(self.status)
