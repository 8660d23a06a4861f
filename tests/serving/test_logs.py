"""The service's log lines: the product's loggers at the chosen level, libraries' from WARNING, text or JSON."""

import json
import logging

import pytest

from serving.runtime.logs import configure_logging


@pytest.fixture
def restore_logging():
    root, product = logging.getLogger(), [logging.getLogger(n) for n in ("serving", "model")]
    saved = root.handlers[:], root.level, [p.level for p in product]
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for p, level in zip(product, saved[2], strict=True):
        p.setLevel(level)


def test_json_lines_carry_the_products_info_and_only_the_libraries_warnings(restore_logging, capsys):
    configure_logging("info", "json")
    logging.getLogger("serving.dicom.pacs").info("fetched %d instance(s)", 1)
    logging.getLogger("urllib3.connectionpool").info("a library's chatter")
    logging.getLogger("urllib3.connectionpool").warning("a library's warning")
    try:
        raise KeyError("a request's own words")
    except KeyError:
        logging.getLogger("serving.front.server").exception("internal error in %s", "CreateRound")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(x["level"], x["logger"], x["message"]) for x in lines] == [
        ("INFO", "serving.dicom.pacs", "fetched 1 instance(s)"),
        ("WARNING", "urllib3.connectionpool", "a library's warning"),
        ("ERROR", "serving.front.server", "internal error in CreateRound")]
    assert lines[2]["exception"] == "KeyError" and "own words" not in json.dumps(lines)  # the type, not the text
    assert lines[0]["time"].endswith("+00:00")


def test_the_level_hides_the_products_info_and_bad_values_are_refused(restore_logging, capsys):
    configure_logging("WARNING", "text")
    logging.getLogger("serving.runtime.service").info("ready")
    logging.getLogger("serving.runtime.service").warning("a PACS gets credentials over plain http")
    err = capsys.readouterr().err
    assert "ready" not in err and "WARNING serving.runtime.service: a PACS gets credentials" in err
    with pytest.raises(ValueError, match="log level must be one of DEBUG, INFO, WARNING, ERROR; got 'LOUD'"):
        configure_logging("loud")
    with pytest.raises(ValueError, match="log format must be one of text, json; got 'xml'"):
        configure_logging("INFO", "xml")
