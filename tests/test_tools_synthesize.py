"""Hierarchical tool synthesis against a scripted HTTP backend, and against the real model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.llm import LLMClient
from synth.store import connect_readonly
from synth.tools.synthesize import (
    EvolutionDraft,
    ParameterDraft,
    SynthesisSettings,
    apply_evolution,
    build_tool_schemas,
    plan_operations,
    synthesize_tools,
)
from synth.tools.validate import schema_problems, tool_problems
from tests.conftest import make_config

runner = CliRunner()
DOMAIN = SimpleNamespace(name="logistics", description="Shipping and parcel tracking.", examples=["parcel tracker"])


def _prompt(body: dict[str, Any]) -> str:
    return " ".join(str(m.get("content")) for m in body["messages"])


def test_id_contract_is_built_by_code() -> None:
    params = [ParameterDraft(name="Weight KG", type="number", description="", required=True),
              ParameterDraft(name="id", type="string", description="dup id", required=True)]
    fields = {"weight_kg": {"type": "number", "description": "Weight"}}
    create_in, create_out = build_tool_schemas("create", "parcel", params, fields)
    assert "id" not in create_in["properties"] and create_in["required"] == ["weight_kg"]
    assert create_out["required"] == ["parcel_id"] and "weight_kg" in create_out["properties"]
    for op in ("get", "update", "delete", "action"):
        schema_in, _ = build_tool_schemas(op, "parcel", params, fields)
        assert "parcel_id" in schema_in["required"]
        assert schema_in["properties"]["parcel_id"] == create_out["properties"]["parcel_id"]
    list_in, list_out = build_tool_schemas("list", "parcel", [], fields)
    assert list_out["properties"]["items"]["items"] == create_out
    # What create returns is accepted by get, by construction.
    created = {"parcel_id": "p-1", "weight_kg": 2.5}
    jsonschema.validate(created, create_out)
    get_in, _ = build_tool_schemas("get", "parcel", [], fields)
    jsonschema.validate({"parcel_id": created["parcel_id"]}, get_in)
    for schema in (create_in, create_out, list_in, list_out, get_in):
        assert schema_problems(schema) == []


def test_plan_spreads_operations_with_producers_first() -> None:
    assert plan_operations(10, 3) == [["create", "get", "list", "update"], ["create", "get", "list"],
                                      ["create", "get", "list"]]
    assert plan_operations(12, 1)[0][-3:] == ["get_export", "action", "action"]
    assert plan_operations(0, 3) == []


@pytest.mark.parametrize("operation,values", [
    ("add_optional_param", []), ("add_enum", ["fast", "slow", "fast"]), ("add_nested_object", ["City", "Zip"]),
    ("add_error_mode", []), ("add_constraint", []),
])
def test_evolutions_keep_tools_valid(operation: str, values: list[str]) -> None:
    from synth.models import ToolSpec

    schema, _ = build_tool_schemas("create", "parcel", [ParameterDraft(name="note", type="string", description="N",
                                                                       required=False)], {})
    spec = ToolSpec.model_validate({"name": "create_parcel", "description": "Create a parcel.",
                                    "input_schema": schema, "domain": "d"})
    draft = EvolutionDraft(name="Delivery Speed", description="How fast.", values=values)
    evolved = apply_evolution(spec, operation, draft, random.Random(0))
    assert evolved.provenance.notes[-1].startswith("evolved"), evolved.provenance.notes
    assert evolved != spec
    assert tool_problems(evolved) == []
    if operation == "add_enum":
        assert evolved.input_schema["properties"]["delivery_speed"]["enum"] == ["fast", "slow"]


async def test_stage_against_fake_backend_accepts_valid_and_rejects_with_reasons(fake_server: Any,
                                                                                 tmp_path: Path) -> None:
    server = fake_server()

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        if "deletes a" in _prompt(body):  # tool drafts for delete: never valid JSON
            return {"role": "assistant", "content": "I cannot do that"}
        return server.default_message(body)

    server.responder = responder
    cfg = make_config(server.base_url, None, structured_retries=1)
    async with LLMClient(cfg) as llm:
        result = await synthesize_tools([DOMAIN], llm, random.Random(0), SynthesisSettings(per_domain=14,
                                                                                           applications_per_domain=2))
    assert len(result.tools) == 12
    failed = [r for r in result.rejected if r.reason.startswith("generation failed")]
    assert len(failed) == 2 and all("not JSON" in r.reason for r in failed)
    for tool in result.tools:
        assert tool_problems(tool) == []
        assert tool.provenance.prompt_version == "tools-v1"
    by_app: dict[str, list[Any]] = {}
    for tool in result.tools:
        by_app.setdefault(tool.application, []).append(tool)
    for tools in by_app.values():
        create = next(t for t in tools if t.name.startswith("create_"))
        id_name = create.output_schema["required"][0]
        readers = [t for t in tools if id_name in t.input_schema.get("required", [])]
        assert len(readers) >= 3  # get, update, action (delete failed)


def _domains(n: int) -> list[str]:
    from synth.domains import load_taxonomy
    from synth.tools.mcp_import import _domains_of

    seen: dict[str, str] = {}
    for d in _domains_of(load_taxonomy()):
        seen.setdefault(d.category, d.name)
    return list(seen.values())[:n]


def test_cli_generate_stores_valid_and_rejected_tools(fake_server: Any, tmp_path: Path) -> None:
    server = fake_server()
    server.responder = lambda body: ({"role": "assistant", "content": "{"} if "searches" in _prompt(body)
                                     else server.default_message(body))
    names = _domains(2)
    db = tmp_path / "g.duckdb"
    config = tmp_path / "synth.toml"
    config.write_text(f'[llm]\nbase_urls = ["{server.base_url}"]\nstructured_retries = 0\n'
                      f'[cache]\ndir = "{tmp_path / "cache"}"\n')
    args = ["tools", "generate", "--domains", ",".join(names), "--per-domain", "5", "--applications", "1",
            "--db", str(db), "--config", str(config), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accepted"] == 8 and summary["rejected"] == 2
    with connect_readonly(db) as con:
        rows = con.execute("SELECT domain, status, reason, input_schema, output_schema FROM tools").fetchall()
    assert {r[0] for r in rows} == set(names)
    for _domain, status, reason, input_schema, output_schema in rows:
        if status == "accepted":
            assert schema_problems(json.loads(input_schema)) == []
            assert schema_problems(json.loads(output_schema), "outputSchema") == []
        else:
            assert reason and "generation failed" in reason
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["rows_added"] == 0


def test_cli_unknown_domain_lists_close_names(tmp_path: Path) -> None:
    result = runner.invoke(app, ["tools", "generate", "--domains", "wether", "--db", str(tmp_path / "x.duckdb"),
                                 "--base-url", "http://127.0.0.1:9/v1"])
    assert result.exit_code == 2
    assert "weather" in result.output


@pytest.mark.integration
def test_real_model_generates_valid_tools_for_3_domains(backend_url: str, tmp_path: Path) -> None:
    names = ["weather", "smart_home", "logistics"] if _has(["weather", "smart_home", "logistics"]) else _domains(3)
    db = tmp_path / "real.duckdb"
    config = tmp_path / "synth.toml"
    config.write_text(f'[cache]\ndir = "{tmp_path / "cache"}"\n')
    result = runner.invoke(app, ["tools", "generate", "--domains", ",".join(names), "--per-domain", "4",
                                 "--db", str(db), "--config", str(config), "--base-url", backend_url, "--json"])
    assert result.exit_code == 0, result.output
    with connect_readonly(db) as con:
        rows = con.execute("SELECT domain, name, status, reason, input_schema, output_schema FROM tools").fetchall()
    accepted = [r for r in rows if r[2] == "accepted"]
    assert len(accepted) >= 10, [r[:4] for r in rows]  # of 12
    for _domain, _name, _status, _reason, input_schema, output_schema in accepted:
        assert schema_problems(json.loads(input_schema)) == []
        assert schema_problems(json.loads(output_schema), "outputSchema") == []
    assert all(r[3] for r in rows if r[2] == "rejected")
    assert {r[0] for r in accepted} == set(names)


def _has(names: list[str]) -> bool:
    from synth.domains import UnknownDomainError, load_taxonomy

    try:
        load_taxonomy().resolve(names)
    except UnknownDomainError:
        return False
    return True


def test_parameters_that_only_repeat_the_names_around_them_are_dropped() -> None:
    """A main job's fleet-shipping tools took `fleet_shipping_and_delivery_management`, which the
    agent filled with junk."""
    from synth.tools.synthesize import _Application, names_only

    app = _Application(domain="order_management", name="Fleet Shipping and Delivery Management System",
                       description="", entity="fleet_shipping")
    assert names_only("fleet_shipping_and_delivery_management", app)
    assert names_only("create_fleet_shipping", app)
    assert not names_only("name", app) and not names_only("shipping_date", app)
    assert not names_only("destination", app)
    assert not names_only("to", app)  # filler inside a name, and a parameter of its own (a recipient)


def test_more_than_eight_applications_per_domain_are_accepted() -> None:
    """`synth tools generate --applications 9` died with a pydantic error (the list allowed 8)."""
    from synth.tools.synthesize import ApplicationList

    apps = [{"name": f"App {i}", "description": "An application.", "entity": f"thing{i}"} for i in range(12)]
    assert len(ApplicationList.model_validate({"applications": apps}).applications) == 12


def test_cli_generate_takes_its_defaults_from_the_config_like_run(fake_server: Any, tmp_path: Path) -> None:
    """`synth tools generate` and `synth run` share their defaults: tools per domain from `[run]`,
    applications and evolution from `[tools]`, the database from `[run] db`; flags override."""
    server = fake_server()
    names = _domains(1)
    db = tmp_path / "from-config.duckdb"
    config = tmp_path / "synth.toml"
    config.write_text(f'[run]\ndb = "{db}"\ntools_per_domain = 3\n[tools]\napplications_per_domain = 1\n'
                      f'evolution_rounds = 0\n[llm]\nbase_urls = ["{server.base_url}"]\n'
                      f'[cache]\ndir = "{tmp_path / "cache"}"\n')
    result = runner.invoke(app, ["tools", "generate", "--domains", names[0], "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accepted"] == 3 and len(summary["applications"][names[0]]) == 1
    assert db.is_file()
    flagged = runner.invoke(app, ["tools", "generate", "--domains", names[0], "--config", str(config), "--json",
                                  "--per-domain", "2", "--db", str(tmp_path / "flags.duckdb")])
    assert json.loads(flagged.stdout)["accepted"] == 2


def _shaped_tool(operation: str, entity: str = "invoice") -> Any:
    from synth.models import ToolSpec
    from synth.tools.synthesize import ParameterDraft, _param_schema, _tool_name, build_tool_schemas

    drafted = [ParameterDraft(name="due_date", type="string", description="When it is due.", required=True),
               ParameterDraft(name="amount", type="number", description="How much.", required=True),
               ParameterDraft(name="currency", type="string", description="ISO code.", required=False),
               ParameterDraft(name="customer_email", type="string", description="Who pays.", required=False)]
    fields = {p.name: _param_schema(p) for p in drafted}
    fields["status"] = {"type": "string", "enum": ["draft", "sent", "paid"], "description": "Where it is."}
    input_schema, output_schema = build_tool_schemas(operation, entity, drafted, fields)  # type: ignore[arg-type]
    return ToolSpec(name=_tool_name("x", operation, entity, set()), description=f"Does {operation} on invoices.",  # type: ignore[arg-type]
                    input_schema=input_schema, output_schema=output_schema,
                    side_effect="write" if operation in ("create", "batch_create", "export") else "read",
                    domain="billing", application="Invoices", source="synthetic")


def test_synthetic_tools_declare_formats_filters_batches_and_jobs_like_real_apis() -> None:
    """Issue 14: real MCP tools have formats, filters, sorting, batch writes and long-running jobs
    with a status; synthetic ones had flat CRUD over strings."""
    create = _shaped_tool("create")
    props = create.input_schema["properties"]
    assert props["due_date"]["format"] == "date" and props["customer_email"]["format"] == "email"
    assert props["amount"]["minimum"] == 0
    listing = _shaped_tool("list").input_schema["properties"]
    assert listing["status"]["enum"] == ["draft", "sent", "paid"] and "default" not in listing["status"]
    assert listing["due_date_from"]["format"] == "date" and listing["due_date_to"]["format"] == "date"
    assert listing["order"]["enum"] == ["asc", "desc"] and "currency" in listing["sort_by"]["enum"]
    assert {"limit", "cursor"} <= set(listing)
    batch = _shaped_tool("batch_create")
    assert batch.name == "batch_create_invoices" and batch.input_schema["required"] == ["items"]
    assert batch.input_schema["properties"]["items"]["items"]["properties"]["due_date"]["format"] == "date"
    assert batch.output_schema["properties"]["created"]["items"]["required"] == ["invoice_id"]
    export, status = _shaped_tool("export"), _shaped_tool("get_export")
    assert (export.name, status.name) == ("create_invoice_export", "get_invoice_export")
    assert status.input_schema["required"] == ["export_id"]
    assert status.output_schema["properties"]["status"]["enum"] == ["queued", "running", "succeeded", "failed"]
    for spec in (create, batch, export, status, _shaped_tool("list"), _shaped_tool("get")):
        assert tool_problems(spec) == [], spec.name
        assert schema_problems(spec.input_schema) == [] and schema_problems(spec.output_schema, "outputSchema") == []
    # The job is a resource the simulator keeps: its create and get name one collection and id.
    from synth.naming import collection_name, id_key, tool_intent

    (kind_a, res_a), (kind_b, res_b) = tool_intent(export.name), tool_intent(status.name)
    assert (kind_a, kind_b) == ("create", "get") and collection_name(res_a) == collection_name(res_b)
    assert id_key(res_a) == "export_id"


def test_an_application_past_crud_gets_a_batch_write_and_an_export_job() -> None:
    from synth.tools.synthesize import plan_operations

    (ops,) = plan_operations(11, 1)
    assert ops[:7] == ["create", "get", "list", "update", "search", "delete", "action"]
    assert ops[7:] == ["batch_create", "export", "get_export", "action"]
    assert plan_operations(8, 3) == [["create", "get", "list"], ["create", "get", "list"], ["create", "get"]]


def test_evolution_deepens_the_output_with_the_input() -> None:
    from synth.tools.synthesize import EvolutionDraft, apply_evolution

    for operation in ("get", "list", "create"):
        spec = _shaped_tool(operation)
        draft = EvolutionDraft(name="priority", description="How urgent it is.", values=["low", "high"])
        evolved = apply_evolution(spec, "add_enum", draft, random.Random(0))
        assert evolved.input_schema["properties"]["priority"]["enum"] == ["low", "high"]
        output = evolved.output_schema
        record = output["properties"]["items"]["items"] if operation == "list" else output
        assert record["properties"]["priority"]["enum"] == ["low", "high"], operation
        assert "priority" not in spec.output_schema.get("properties", {})  # the original is untouched
        assert tool_problems(evolved) == []
    dated = apply_evolution(_shaped_tool("update"), "add_optional_param",
                            EvolutionDraft(name="paid_at", description="When it was paid.", values=[]),
                            random.Random(0))
    assert dated.input_schema["properties"]["paid_at"]["format"] == "date-time"


def test_evolution_does_not_add_a_parameter_named_after_its_tool() -> None:
    """The final CI main job of a session accepted `create_weather(..., create_weather={...})` and
    `list_order_managements(function_list_order_managements=...)`: the evolution pass added
    parameters that only repeat the tool's own names, which drafted parameters may not."""
    from synth.tools.synthesize import EvolutionDraft, apply_evolution

    spec = _shaped_tool("create")
    for operation, name in (("add_nested_object", "create_invoice"), ("add_enum", "function_create_invoices"),
                            ("add_optional_param", "invoice")):
        draft = EvolutionDraft(name=name, description="More of it.", values=["a", "b"])
        evolved = apply_evolution(spec, operation, draft, random.Random(0))
        assert name not in evolved.input_schema["properties"], operation
        assert "only repeats the tool's names" in evolved.provenance.notes[-1]
    kept = apply_evolution(spec, "add_enum", EvolutionDraft(name="priority", description="How urgent.",
                                                            values=["low", "high"]), random.Random(0))
    assert "priority" in kept.input_schema["properties"]


def test_evolution_drops_enum_values_and_fields_no_one_could_say() -> None:
    """A main job's tool offered `create_order_management: "jsscjdjcjcjnjjcjcj"`, an evolved enum."""
    from synth.tools.synthesize import EvolutionDraft, apply_evolution

    spec = _shaped_tool("create")
    gibberish = EvolutionDraft(name="channel", description="Where.", values=["jsscjdjcjcjnjjcjcj", "email", "sms"])
    evolved = apply_evolution(spec, "add_enum", gibberish, random.Random(0))
    assert evolved.input_schema["properties"]["channel"]["enum"] == ["email", "sms"]
    nested = apply_evolution(spec, "add_nested_object",
                             EvolutionDraft(name="address", description="Where.", values=["street", "xqzvbnmk"]),
                             random.Random(0))
    assert list(nested.input_schema["properties"]["address"]["properties"]) == ["street"]


def test_application_entities_come_from_the_domains_curated_text() -> None:
    """Asked for "one noun", the embedded model named what an application manages `futurity`,
    `shescue`, `blueprint_5` or `chest_card` (for chess), and every tool of it carried the word.
    The nouns now come from the taxonomy's own text; the model only chooses among them."""
    from synth.domains import load_taxonomy
    from synth.domains.taxonomy import own_domain_entry
    from synth.tools.synthesize import domain_entities

    taxonomy = load_taxonomy()
    assert domain_entities(taxonomy.get("weather")) == ["condition", "forecast", "weather"]
    assert {"order", "shipment"} <= set(domain_entities(taxonomy.get("order_management")))
    assert domain_entities(SimpleNamespace(name="wealth_management", description="Holdings.",
                                           examples=["portfolio rebalancer", "order tracking page"])) == [
        "holding", "portfolio", "order", "wealth"]
    assert domain_entities(own_domain_entry("mcp/fetch")) == []  # nothing named: the draft's noun stays free


async def test_applications_choose_their_entity_among_the_domains(fake_server: Any) -> None:
    """The entity is an enum under the grammar; two applications never share one (the second
    takes the next free noun, not a made-up compound), and one for which no noun is left is
    dropped."""
    from synth.tools.synthesize import _applications

    server = fake_server()
    sent: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        sent.append(body)
        apps = [{"name": "Sky Cast", "description": "Forecasts for a city.", "entity": "forecast"},
                {"name": "Sky Now", "description": "Conditions now.", "entity": "forecast"},
                {"name": "Sky Later", "description": "Forecasts, later.", "entity": "forecast"}]
        return {"role": "assistant", "content": json.dumps({"applications": apps})}

    server.responder = responder
    weather = SimpleNamespace(name="api", description="Current conditions and forecasts for a place.",
                              examples=["hourly forecast widget"])
    async with LLMClient(make_config(server.base_url)) as llm:
        apps = await _applications(weather, 3, llm, seed=0)
    schema = sent[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["applications"]["items"]["properties"]["entity"]["enum"] == ["condition", "forecast"]
    assert "one of: condition, forecast" in _prompt(sent[0])
    assert [(a.name, a.entity) for a in apps] == [("Sky Cast", "forecast"), ("Sky Now", "condition")]


def test_parameters_that_name_no_value_are_dropped() -> None:
    """Main jobs' tools took `field1`, `field2`, `input_data_data`, `required_data`,
    `jonkson_get_forecast`, `n_1_f_2` and `order_management_api_url`: names of no value, which
    the agent can only fill with junk. Drafted and evolved parameters alike go; names that say
    what to pass stay."""
    from synth.tools.synthesize import EvolutionDraft, apply_evolution, says_nothing

    for junk in ("field1", "fields_2", "input_data_data", "required_data", "options", "jonkson_get_forecast",
                 "n_1_f_2", "order_management_api_url", "order_management_api_endpoint"):
        assert says_nothing(junk), junk
    for name in ("items", "type", "name", "forecast_data", "search_query", "batch_size", "update_frequency",
                 "created_at", "price_list", "cancellation_type", "x", "id", "callback_url", "api_version", "to"):
        assert not says_nothing(name), name

    spec = _shaped_tool("create")
    draft = EvolutionDraft(name="field1", description="A field.", values=[])
    evolved = apply_evolution(spec, "add_optional_param", draft, random.Random(0))
    assert "field1" not in evolved.input_schema["properties"]
    assert "names no value" in evolved.provenance.notes[-1]
