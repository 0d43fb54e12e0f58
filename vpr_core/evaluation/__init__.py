"""Offline evaluation: datasets with ground truth, recall@N and PR metrics, exact search
(float, Hamming, Hamming + float re-rank), sequence filtering, the pixel baseline, JSON / CSV /
PNG reports and the ``vpr evaluate`` command."""
