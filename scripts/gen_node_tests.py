"""Writes the ONNX backend node tests (model.onnx + test_data_set_0) with the pinned onnx.

The onnx wheel no longer ships the data, only the generators; inputs are drawn with a fixed
seed so every run writes the same files.
"""
import argparse
import sys

import numpy as np
import onnx.backend.test.case.node as node
import onnx.backend.test.cmd_tools as cmd_tools

np.random.seed(0)
cases = node.collect_testcases(None)
cmd_tools.model_test.collect_testcases = lambda: cases
cmd_tools.generate_data(argparse.Namespace(output=sys.argv[1], op_type=None, diff=False))
