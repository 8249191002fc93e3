"""Admission's configuration: classes, tenants and SLOs validated at load, every problem at once."""

from __future__ import annotations

import pytest

from serve_app.auth import key_hash
from serve_app.config import ConfigError, parse_config

MODEL = {"name": "m", "source": "/models/m"}


def config(admission: dict, **rest: object):
    return parse_config({"models": [MODEL], "admission": admission, **rest}, "test.yaml")


def test_the_defaults_admit_like_before_with_one_lenient_class():
    admission = parse_config({"models": [MODEL]}).admission
    assert admission.enabled and list(admission.classes) == ["default"]
    assert admission.classes["default"].ttft_slo_s == 30.0
    assert admission.classes["default"].queue_wait_s == pytest.approx(24.0)
    assert admission.tenant("anyone").limits.requests_per_minute is None


def test_classes_tenants_and_limits_load_from_the_design_shape():
    admission = config({
        "classes": {"interactive": {"ttft_slo_s": 2.0}, "batch": {"ttft_slo_s": 30.0, "priority": 1}},
        "default_class": "interactive",
        "tenants": [{"name": "acme", "class": "batch", "weight": 2,
                     "limits": {"requests_per_minute": 600, "tokens_per_minute": 2000000, "max_concurrent": 64}}],
    }).admission
    acme = admission.tenant("acme")
    assert admission.class_of(acme) == "batch" and acme.weight == 2
    assert acme.limits.max_concurrent == 64
    assert admission.class_of(admission.tenant("other")) == "interactive"
    assert admission.longest_wait_s == pytest.approx(24.0)


def test_every_inconsistency_is_reported_at_once():
    with pytest.raises(ConfigError) as error:
        config({"classes": {"interactive": {"ttft_slo_s": 2.0}}, "default_class": "gold",
                "tenants": [{"name": "a", "class": "silver"}, {"name": "a"}]})
    message = str(error.value)
    assert "test.yaml" in message
    assert "default_class 'gold'" in message
    assert "repeated: ['a']" in message
    assert "class 'silver'" in message


@pytest.mark.parametrize(("admission", "key"), [
    ({"classes": {"c": {"ttft_slo_s": 0}}, "default_class": "c"}, "admission.classes.c.ttft_slo_s"),
    ({"classes": {"c": {}}, "default_class": "c"}, "admission.classes.c.ttft_slo_s"),
    ({"classes": {"c": {"ttft_slo_s": 1, "max_queue_wait_s": 2}}, "default_class": "c"}, "admission.classes.c"),
    ({"tenants": [{"name": "a", "limits": {"requests_per_minute": 0}}]},
     "admission.tenants.0.limits.requests_per_minute"),
    ({"tenants": [{"name": "a", "limits": {"rpm": 5}}]}, "admission.tenants.0.limits.rpm"),
    ({"tenants": [{"name": "a", "weight": -1}]}, "admission.tenants.0.weight"),
    ({"kv_budget_fraction": 1.5}, "admission.kv_budget_fraction"),
    ({"when_unreachable": "panic"}, "admission.when_unreachable"),
])
def test_bad_values_name_their_key(admission, key):
    with pytest.raises(ConfigError) as error:
        config(admission)
    assert key in str(error.value)


def test_auth_keys_must_name_listed_tenants_once_tenants_are_listed():
    keys = {"keys": [{"sha256": key_hash("k1"), "tenant": "acme"}, {"sha256": key_hash("k2"), "tenant": "acmee"}]}
    with pytest.raises(ConfigError) as error:
        config({"tenants": [{"name": "acme"}]}, auth=keys)
    assert "['acmee']" in str(error.value)
    assert config({}, auth=keys).auth.keys  # no tenants listed: keys name whom they like


def test_a_config_survives_a_dump_and_reload():
    loaded = config({"tenants": [{"name": "acme", "class": "default"}]})
    assert parse_config(loaded.model_dump(), "again").admission == loaded.admission
