"""Kinds of promise (one module each), the one verdict record and the one confirm-before-fail procedure."""
