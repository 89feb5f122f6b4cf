"""The panel's screens: Runs, New run, Live, Evaluation, Compare, and the confirmation dialog."""
