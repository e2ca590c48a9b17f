from pathlib import Path
import polars as pl
from polars.plugins import register_plugin_function
from mmq._mmq import series_len

LIB = Path(__file__).parent

def probe(e):
    return register_plugin_function(plugin_path=LIB, function_name="str_len_probe", args=[e], is_elementwise=True)
