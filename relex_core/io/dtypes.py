"""Stored dtypes and element counts: one table for the reader and the writer.

safetensors names dtypes by code ("BF16", "F32", ...). relex analyses the floating ones;
other tensors (integer buffers, masks) are carried through an export unchanged.
"""

import torch

SAFETENSORS_CODES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64",
                     torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                     torch.uint8: "U8", torch.bool: "BOOL"}
DTYPES_BY_CODE = {code: dtype for dtype, code in SAFETENSORS_CODES.items()}
FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def element_count(shape) -> int:
    """Elements in a tensor of this shape; a 0-d tensor holds one."""
    count = 1
    for size in shape:
        count *= int(size)
    return count


def dtype_name(dtype) -> str:
    """'bfloat16' for torch.bfloat16: how relex names dtypes in tables and provenance."""
    return str(dtype).removeprefix("torch.")
