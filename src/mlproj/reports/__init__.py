"""Evaluation outputs (metrics tables, predictions, confusion matrix, Grad-CAM grid) and the HTML run report.

Heavy imports (torch, matplotlib, grad-cam) happen inside the functions that need them, so `mlproj --help` and
`mlproj report --help` stay fast.
"""
