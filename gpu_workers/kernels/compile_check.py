"""Compile the Triton kernels for a GPU without one: catches GPU-only compile errors and reads the resource
report (registers, shared memory, local memory = spills) and the SASS (tensor-core instructions, load widths).

    python -m gpu_workers.kernels.compile_check            # sm_90 (H100/H200)

Kernels are compiled the way a real launch specialises them (B in the pool's rank-major layout): strides equal to 1 become constants, pointers
and the other strides are declared divisible by 16 (as Triton's launcher does for such values), so the
loads can be vectorised as they will be on the device. Needs the ptxas/cuobjdump/nvdisasm that ship with
Triton's NVIDIA backend; must run in a process where TRITON_INTERPRET is not set (run_check spawns one).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _compile(kernel, types: dict[str, str], constexprs: dict, divisible: list[str], options: dict, target):
    import triton
    from triton.compiler import ASTSource

    signature = {name: ("constexpr" if name in constexprs else types[name]) for name in kernel.arg_names}
    attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=target, options=options)


def _inspect(compiled) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        cubin = Path(directory) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", str(cubin)],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_tool("nvdisasm"), str(cubin)], capture_output=True, text=True, check=True).stdout
    numbers = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    instructions: dict[str, int] = {}
    for opcode in re.findall(r"\b((?:HGMMA|HMMA|LDG|STG|LDL|STL|RED|ATOM)[.A-Z0-9_]*)", sass):
        instructions[opcode] = instructions.get(opcode, 0) + 1
    return {
        "registers": int(numbers.get("REG", 0)),
        "stack": int(numbers.get("STACK", 0)),
        "local": int(numbers.get("LOCAL", 0)),
        "shared_bytes": int(compiled.metadata.shared),
        "instructions": instructions,
    }


def lora_variants():
    """(label, dtype, BLOCK_M, BLOCK_R, BLOCK_K, BLOCK_N, atomic): the configurations apply_lora launches."""
    return [
        ("decode bf16 r16", "bf16", 16, 16, 64, 64, False),
        ("prefill bf16 r16", "bf16", 64, 16, 64, 64, False),
        ("mixed k>1 bf16 r64", "bf16", 16, 64, 64, 64, True),
        ("bf16 r128", "bf16", 64, 128, 64, 32, False),
        ("fp16 r32", "fp16", 16, 32, 64, 64, False),
        ("fp32 r16", "fp32", 16, 16, 32, 64, False),
    ]


def compile_all(capability: int = 90) -> list[dict]:
    from triton.backends.compiler import GPUTarget

    from gpu_workers.kernels import lora, mixture

    target = GPUTarget("cuda", capability, 32)
    reports = []
    for label, dtype, block_m, block_r, block_k, block_n, atomic in lora_variants():
        ieee = dtype == "fp32"
        shrink_types = {
            "x_ptr": f"*{dtype}", "a_ptr": f"*{dtype}", "ranks_ptr": "*i32", "h_ptr": "*fp32",
            "pair_rows_ptr": "*i32", "tile_slot_ptr": "*i32", "tile_start_ptr": "*i32", "tile_end_ptr": "*i32",
            "IN": "i32", "K_PER_SPLIT": "i32", "stride_xm": "i32", "stride_as": "i32", "stride_ar": "i32",
            "stride_hs": "i32", "stride_hp": "i32",
        }
        compiled = _compile(
            lora._lora_shrink_kernel, shrink_types,
            {"stride_xk": 1, "stride_ak": 1, "BLOCK_M": block_m, "BLOCK_R": block_r, "BLOCK_K": block_k,
             "IEEE": ieee, "UPCAST": False},
            ["x_ptr", "a_ptr", "h_ptr", "IN", "K_PER_SPLIT", "stride_xm", "stride_as", "stride_ar", "stride_hs",
             "stride_hp"],
            {"num_warps": 4, "num_stages": 3}, target,
        )
        reports.append({"kernel": "lora_shrink", "variant": label, **_inspect(compiled)})
        expand_types = {
            "h_ptr": "*fp32", "b_ptr": f"*{dtype}", "y_ptr": "*fp32" if atomic else f"*{dtype}",
            "scalings_ptr": "*fp32", "ranks_ptr": "*i32", "pair_rows_ptr": "*i32", "pair_weights_ptr": "*fp32",
            "tile_slot_ptr": "*i32", "tile_start_ptr": "*i32", "tile_end_ptr": "*i32", "OUT": "i32",
            "stride_hs": "i32", "stride_hp": "i32", "stride_bs": "i32", "stride_br": "i32", "stride_ym": "i32",
        }
        compiled = _compile(
            lora._lora_expand_kernel, expand_types,
            {"stride_bo": 1, "stride_yn": 1, "SPLIT_K": 2 if block_m == 16 else 1, "BLOCK_M": block_m,
             "BLOCK_N": block_n, "BLOCK_R": block_r, "ATOMIC": atomic, "IEEE": ieee, "UPCAST": False},
            ["h_ptr", "b_ptr", "y_ptr", "OUT", "stride_hs", "stride_hp", "stride_bs", "stride_br", "stride_ym"],
            {"num_warps": 4, "num_stages": 2}, target,
        )
        reports.append({"kernel": "lora_expand", "variant": label, **_inspect(compiled)})
    for dtype in ("bf16", "fp32"):
        logits = {"logits_ptr": f"*{dtype}", "K": "i32", "V": "i32", "V_PER_PROGRAM": "i32", "stride_lb": "i32",
                  "stride_lk": "i32"}
        aligned = ["logits_ptr", "V", "V_PER_PROGRAM", "stride_lb", "stride_lk"]
        compiled = _compile(
            mixture._expert_normaliser_kernel, {**logits, "part_m_ptr": "*fp32", "part_s_ptr": "*fp32"},
            {"stride_lv": 1, "BLOCK_K": 4, "BLOCK_V": 512}, aligned, {"num_warps": 4, "num_stages": 2}, target,
        )
        reports.append({"kernel": "mixture", "variant": f"normaliser {dtype} k<=4", **_inspect(compiled)})
        compiled = _compile(
            mixture._mixture_chunk_kernel,
            {**logits, "offset_ptr": "*fp32", "inv_temp_ptr": "*fp32", "out_ptr": "*fp32", "part_m_ptr": "*fp32",
             "part_s_ptr": "*fp32", "stride_ob": "i32"},
            {"stride_lv": 1, "BLOCK_K": 4, "BLOCK_V": 512}, aligned + ["out_ptr", "stride_ob"],
            {"num_warps": 4, "num_stages": 2}, target,
        )
        reports.append({"kernel": "mixture", "variant": f"chunk {dtype} k<=4", **_inspect(compiled)})
    return reports


def run_check(capability: int = 90) -> list[dict]:
    """compile_all in a fresh interpreter without TRITON_INTERPRET (the interpreter replaces @triton.jit)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    output = subprocess.run(
        [sys.executable, "-m", "gpu_workers.kernels.compile_check", "--json", "--capability", str(capability)],
        capture_output=True, text=True, env=env, cwd=root, check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capability", type=int, default=90)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET to compile for the GPU")
    reports = compile_all(args.capability)
    if args.json:
        print(json.dumps(reports))
        return
    for report in reports:
        wide = {k: v for k, v in report["instructions"].items() if k.startswith(("LDG", "HMMA", "HGMMA", "LDL", "STL"))}
        print(f"{report['kernel']:12} {report['variant']:20} regs {report['registers']:3} shared "
              f"{report['shared_bytes']:6} local {report['local']} {wide}")


if __name__ == "__main__":
    main()
