"""``fmnist-bench report``: REPORT.md, the study's tables beside ours with the bench results and figures.
The entry point is ``document.main``; ``figures`` draws the pictures it embeds."""
