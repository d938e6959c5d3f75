"""The Streamlit side of tiSFM Explorer: helpers shared by ``app.py`` and the pages.

Only layout and widgets live here and in the pages; everything they compute comes from
:mod:`tisfm_core`, which never imports Streamlit.
"""
