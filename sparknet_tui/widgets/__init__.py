"""The panel's own widgets: a braille line chart, inline sparklines and the hardware panel."""
