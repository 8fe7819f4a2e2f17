"""Qt user interface: the only package that imports PySide6 / pyqtgraph.

app.py           run_gui(): QApplication, the line, the window, signals, exit code
main_window.py   the operator screen and its display timer (the only place that draws)
bridge.py        line callbacks (fan-out threads) -> deques -> Qt signals on the GUI thread
overlay.py       numpy/cv2 composition of image + heat map + outline at view size
verdict_banner.py, image_view.py, counters.py, trend.py, drift_panel.py, nok_strip.py,
status_bar.py, sheets.py (in-window panels and the notice bar), theme.py (resources/themes)
bench.py         `station bench-gui`: GUI-thread time per update, throughput vs headless
"""
