"""VTA configuration: shipped configs, derived sizes (spec §1) and rejected configs."""

import json

import pytest

from hwcompile.errors import VTAError
from hwcompile.targets.vta.config import from_dict, load_config, shipped_configs

DEFAULT = {"TARGET": "sim", "HW_VER": "0.0.2", "LOG_INP_WIDTH": 3, "LOG_WGT_WIDTH": 3,
           "LOG_ACC_WIDTH": 5, "LOG_BATCH": 0, "LOG_BLOCK": 4, "LOG_UOP_BUFF_SIZE": 15,
           "LOG_INP_BUFF_SIZE": 15, "LOG_WGT_BUFF_SIZE": 18, "LOG_ACC_BUFF_SIZE": 17}


def test_shipped_configs_present():
    assert shipped_configs() == ["de10nano", "pynq", "sim", "ultra96", "zcu104"]


@pytest.mark.parametrize("name", ["sim", "pynq", "ultra96", "zcu104", "de10nano"])
def test_default_derived_sizes(name):
    c = load_config(name)
    assert c.target == name
    assert c.bitstream == "1x16_i8w8a32_15_15_18_17"
    assert (c.batch, c.block_in, c.block_out) == (1, 16, 16)
    assert (c.inp_elem_bytes, c.wgt_elem_bytes, c.acc_elem_bytes, c.out_elem_bytes,
            c.uop_elem_bytes) == (16, 256, 64, 16, 4)
    assert (c.uop_depth, c.inp_depth, c.wgt_depth, c.acc_depth, c.out_depth) == \
        (8192, 2048, 1024, 2048, 2048)
    assert c.log_out_buff_size == 15 and c.log_out_width == 3


@pytest.mark.parametrize("name,clock,axi", [("pynq", 100, 64), ("ultra96", 333, 128),
                                            ("zcu104", 333, 128), ("de10nano", 100, 64)])
def test_board_facts(name, clock, axi):
    c = load_config(name)
    assert (c.clock_mhz, c.axi_width) == (clock, axi)


def test_peak_throughput_pynq():
    assert load_config("pynq").peak_gmacs == pytest.approx(25.6)


def test_load_by_path_and_upstream_file_without_board_facts(tmp_path):
    p = tmp_path / "vta_config.json"
    p.write_text(json.dumps(dict(DEFAULT, TARGET="ultra96")))
    c = load_config(p)
    assert c.target == "ultra96" and c.clock_mhz == 333 and c.axi_width == 128
    assert load_config(str(p)) == c


def test_non_default_config_derives_bitstream_and_depths():
    c = from_dict(dict(DEFAULT, LOG_BATCH=1, LOG_INP_BUFF_SIZE=16, LOG_ACC_BUFF_SIZE=18))
    assert c.bitstream == "2x16_i8w8a32_15_16_18_18"
    assert c.inp_elem_bytes == 32 and c.acc_elem_bytes == 128
    assert c.inp_depth == 2048 and c.acc_depth == 2048


@pytest.mark.parametrize("change,words", [
    ({"TARGET": "vu9p"}, ["TARGET", "vu9p", "pynq"]),
    ({"HW_VER": "0.0.1"}, ["HW_VER"]),
    ({"LOG_BLOCK": 3.5}, ["LOG_BLOCK", "power-of-two"]),
    ({"LOG_BATCH": -1}, ["LOG_BATCH"]),
    ({"LOG_BLOCK": "4"}, ["LOG_BLOCK"]),
    ({"LOG_INP_WIDTH": 2}, ["LOG_INP_WIDTH"]),
    # 16 + 16 + 10 uop index bits
    ({"LOG_ACC_BUFF_SIZE": 22, "LOG_INP_BUFF_SIZE": 20}, ["micro-op", "42 bits"]),
    # uop_bgn 14 + uop_end 15 bits push the GEMM layout past 128 bits
    ({"LOG_UOP_BUFF_SIZE": 16}, ["GEMM layout", "bits"]),
    ({"LOG_UOP_BUFF_SIZE": 2}, ["LOG_UOP_BUFF_SIZE"]),
    ({"CLOCK_MHZ": 0}, ["CLOCK_MHZ"]),
    ({"AXI_WIDTH": 48}, ["AXI_WIDTH"]),
    ({"LOG_BLOK": 4}, ["unknown", "LOG_BLOK"]),
])
def test_invalid_configs_rejected_with_reason(change, words):
    with pytest.raises(VTAError) as e:
        from_dict(dict(DEFAULT, **change), "my.json")
    for w in words:
        assert w in str(e.value)
    assert "my.json" in str(e.value)


def test_missing_field_named():
    fields = dict(DEFAULT)
    del fields["LOG_WGT_BUFF_SIZE"]
    with pytest.raises(VTAError, match="missing field.*LOG_WGT_BUFF_SIZE"):
        from_dict(fields)


def test_unknown_name_and_bad_json(tmp_path):
    with pytest.raises(VTAError, match="neither a shipped config"):
        load_config("nosuchboard")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VTAError, match="bad.json"):
        load_config(bad)
