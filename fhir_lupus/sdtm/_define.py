"""define.xml: the datasets described as Define-XML 2.1 (on ODM 1.3.2), from what was written and the mappings that
wrote it, so a reviewer reads each variable's type, length, origin, source and codelist next to the data.

Built with odmlib (the ``sdtm`` extra), CDISC's ODM library and the one CDISC CORE reads define.xml with, and
checked against the Define-XML 2.1 schema odmlib ships before it is written: a mapping that would make an invalid
define.xml (a class Define-XML does not know, say) stops the run instead. OIDs are those of the Dataset-JSON files:
``IG.<domain>`` for a dataset, ``IT.<domain>.<variable>`` for a variable, ``MDV.<study>`` for the metadata version.

Every variable's origin and ``from`` text come from its mapping: a derived one gets a method (``MT.``) saying how,
the others the source text in their origin. Codelists hold the values the datasets use (``_codelists``).
A domain whose mapping names ``value_lists`` gets value-level metadata: the variable described once per value of
another (LBORRESU for each LBTESTCD), with the where-clause that selects it.
"""

from __future__ import annotations

import functools
import re
import xml.dom.minidom
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_lupus._scratch import write_atomic
from fhir_lupus._version import __version__
from fhir_lupus.errors import ExtraMissing, FhirLupusError
from fhir_lupus.sdtm._codelists import Terminology, UsedCodelist, codelist_oid, used_codelists
from fhir_lupus.sdtm._engine import Dataset, Value
from fhir_lupus.sdtm._spec import DomainSpec, ValueList, Variable

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["DefineStudy", "define_xml", "write_define"]

DEFINE_VERSION = "2.1.0"
IG_STANDARD = ("SDTMIG", "3.4")
STD_IG = "STD.SDTMIG.3-4"
STD_CT = "STD.CT.SDTM"
MANDATORY = {"Req": "Yes", "Exp": "No", "Perm": "No"}
GUIDE_LEAF = "LF.ReviewersGuide"
HINT = "pip install 'fhir-lupus[sdtm]'"


@dataclass(frozen=True)
class DefineStudy:
    """What define.xml says of the study and the files: the study's OID (its NCT id) and title, who wrote it and
    when, each dataset's file (domain -> file name beside define.xml), and the reviewer's guide if written."""

    oid: str
    title: str
    originator: str
    created: datetime
    files: Mapping[str, str]
    guide: str | None = None


def write_define(datasets: Sequence[Dataset], path: Path, study: DefineStudy, terms: Terminology) -> Path:
    """define.xml for ``datasets`` at ``path``, written whole once the schema accepts it."""
    write_atomic(path, define_xml(datasets, study, terms))
    return path


def define_xml(datasets: Sequence[Dataset], study: DefineStudy, terms: Terminology) -> str:
    """The Define-XML 2.1 document (text) describing ``datasets``; FhirLupusError if the schema refuses it."""
    define = _odmlib()
    codelists = used_codelists(datasets, terms)
    odm = define.ODM(
        FileOID=f"DEF.{study.oid}",
        FileType="Snapshot",
        ODMVersion="1.3.2",
        CreationDateTime=study.created.isoformat(timespec="seconds"),
        Originator=study.originator,
        SourceSystem="fhir-lupus",
        SourceSystemVersion=__version__,
        Context="Submission",
    )
    odm.Study = define.Study(OID=study.oid)
    odm.Study.GlobalVariables = define.GlobalVariables(
        StudyName=define.StudyName(_content=study.oid),
        StudyDescription=define.StudyDescription(_content=study.title),
        ProtocolName=define.ProtocolName(_content=study.oid),
    )
    mdv = define.MetaDataVersion(
        OID=f"MDV.{study.oid}",
        Name=f"{study.oid} SDTM",
        Description=f"SDTMIG {IG_STANDARD[1]} tabulation datasets of {study.oid}",
        DefineVersion=DEFINE_VERSION,
    )
    odm.Study.MetaDataVersion = mdv
    mdv.Standards = define.Standards()
    mdv.Standards.Standard.append(
        define.Standard(OID=STD_IG, Name=IG_STANDARD[0], Type="IG", Version=IG_STANDARD[1], Status="Final")
    )
    if terms.package:
        publishing_set, version = _ct_package(terms.package)
        mdv.Standards.Standard.append(
            define.Standard(
                OID=STD_CT, Name="CDISC/NCI", Type="CT", PublishingSet=publishing_set, Version=version, Status="Final"
            )
        )
    if study.guide:
        mdv.SupplementalDoc = define.SupplementalDoc()
        mdv.SupplementalDoc.DocumentRef.append(define.DocumentRef(leafID=GUIDE_LEAF))
    used = {name for c in codelists for name in c.variables}
    wheres: dict[str, Any] = {}
    for dataset in datasets:
        for value_list in dataset.spec.value_lists:
            mdv.ValueListDef.append(_value_list(define, dataset, value_list, wheres))
    mdv.WhereClauseDef.extend(wheres.values())
    for dataset in datasets:
        mdv.ItemGroupDef.append(_item_group(define, dataset, study.files[dataset.name]))
    for dataset in datasets:
        for variable in dataset.spec.variables:
            mdv.ItemDef.append(_item_def(define, dataset, variable, used))
        for value_list in dataset.spec.value_lists:
            mdv.ItemDef.extend(_value_items(define, dataset, value_list, used))
    mdv.CodeList.extend(_codelist(define, codelist) for codelist in codelists)
    for dataset in datasets:
        mdv.MethodDef.extend(_method(define, dataset.spec, v) for v in dataset.spec.variables if v.origin == "Derived")
    if study.guide:
        mdv.leaf.append(_leaf(define, GUIDE_LEAF, study.guide, "Reviewer's Guide"))
    text = xml.dom.minidom.parseString(odm.to_xml_string()).toprettyxml(indent="  ", encoding="UTF-8").decode()
    _check_schema(text)
    return text


def _ct_package(package: str) -> tuple[str, str]:
    """``sdtmct-2015-12-18`` as Define-XML's publishing set and version (SDTM, 2015-12-18): CORE reads the package
    back from them (``<set>ct-<version>``) and checks against it."""
    found = re.fullmatch(r"([a-z]+)ct-(\d{4}-\d{2}-\d{2})", package)
    if found is None:
        raise FhirLupusError(f"CT package {package!r}: expected the CDISC form <set>ct-<yyyy-mm-dd>")
    return found[1].upper(), found[2]


def _odmlib() -> ModuleType:
    try:
        import odmlib.define_2_1.model as define
    except ImportError:
        raise ExtraMissing(f"define.xml needs odmlib: {HINT}") from None
    module: ModuleType = define
    return module


@functools.cache
def _schema() -> Any:
    """The Define-XML 2.1 schema odmlib ships (with the ODM 1.3.2 schema it builds on), compiled once."""
    import xmlschema
    from odmlib.schema_manager import get_schema_path

    return xmlschema.XMLSchema(get_schema_path("define", "2.1"))


def _check_schema(text: str) -> None:
    error = next(iter(_schema().iter_errors(text)), None)
    if error is not None:
        raise FhirLupusError(f"define.xml: the Define-XML 2.1 schema refuses it: {error.reason} at {error.path}")


def _description(define: ModuleType, text: str) -> Any:
    return define.Description(TranslatedText=[define.TranslatedText(_content=text, lang="en")])


def _leaf(define: ModuleType, leaf_id: str, href: str, title: str) -> Any:
    return define.leaf(ID=leaf_id, href=href, title=define.title(_content=title))


def _item_group(define: ModuleType, dataset: Dataset, file_name: str) -> Any:
    spec = dataset.spec
    keys = {name: index + 1 for index, name in enumerate(spec.keys)}
    design = spec.class_ == "TRIAL DESIGN"
    group = define.ItemGroupDef(
        OID=f"IG.{spec.domain}",
        Name=spec.domain,
        Repeating="No" if spec.structure.lower() == "one record per subject" else "Yes",
        IsReferenceData="Yes" if design else None,
        SASDatasetName=spec.domain,
        Domain=spec.domain,
        Purpose="Tabulation",
        Structure=spec.structure,
        ArchiveLocationID=f"LF.{spec.domain}",
        StandardOID=STD_IG,
        Description=_description(define, spec.label),
        Class=define.Class(Name=spec.class_),
        leaf=_leaf(define, f"LF.{spec.domain}", file_name, file_name),
    )
    for order, variable in enumerate(spec.variables, start=1):
        empty = all(_text(r[variable.name]) == "" for r in dataset.records)
        group.ItemRef.append(
            define.ItemRef(
                ItemOID=_item_oid(spec.domain, variable.name),
                OrderNumber=order,
                Mandatory=MANDATORY[variable.core],
                KeySequence=keys.get(variable.name),
                MethodOID=_method_oid(spec.domain, variable.name) if variable.origin == "Derived" else None,
                Role=variable.role,
                HasNoData="Yes" if empty and dataset.records and variable.core != "Req" else None,
            )
        )
    return group


def _item_def(define: ModuleType, dataset: Dataset, variable: Variable, used: set[str]) -> Any:
    spec = dataset.spec
    item = _shaped_item(
        define, _item_oid(spec.domain, variable.name), variable, [r[variable.name] for r in dataset.records]
    )
    item.Description = _description(define, variable.label)
    if variable.codelist and f"{spec.domain}.{variable.name}" in used:
        item.CodeListRef = define.CodeListRef(CodeListOID=codelist_oid(variable.codelist))
    item.Origin.append(_origin(define, variable))
    if any(v.variable == variable.name for v in spec.value_lists):
        item.ValueListRef = define.ValueListRef(ValueListOID=_value_list_oid(spec.domain, variable.name))
    return item


def _shaped_item(define: ModuleType, oid: str, variable: Variable, values: Sequence[Value]) -> Any:
    """An ItemDef with the data type, length and significant digits the values written have."""
    texts = [_text(v) for v in values]
    if variable.transform == "iso_date":
        return define.ItemDef(OID=oid, Name=variable.name, DataType=_dtc_type(texts), SASFieldName=variable.name)
    length = max([1, *(len(t) for t in texts)])
    digits = None
    if variable.type == "float":
        digits = max([0, *(-int(Decimal(t).as_tuple().exponent) for t in texts if t)])
    return define.ItemDef(
        OID=oid,
        Name=variable.name,
        DataType=variable.type,
        Length=length,
        SignificantDigits=digits,
        SASFieldName=variable.name,
    )


def _dtc_type(values: Iterable[str]) -> str:
    """Define-XML's type of ISO 8601 values: date or datetime when all are complete, a partial type otherwise."""
    present = [v for v in values if v]
    if present and all(len(v) == len("2008-01-06") for v in present):
        return "date"
    if not present or all(len(v) >= len("2008-01-06T08:00") for v in present):
        return "datetime"
    return "partialDatetime" if any("T" in v for v in present) else "partialDate"


def _origin(define: ModuleType, variable: Variable) -> Any:
    """The variable's origin; where the value is read (``from``) for all but derived ones, whose method says how."""
    origin = define.Origin(Type=variable.origin)
    if variable.origin != "Derived" and variable.from_:
        origin.Description = _description(define, variable.from_)
    return origin


def _method(define: ModuleType, spec: DomainSpec, variable: Variable) -> Any:
    return define.MethodDef(
        OID=_method_oid(spec.domain, variable.name),
        Name=f"Algorithm to derive {spec.domain}.{variable.name}",
        Type="Computation",
        Description=_description(define, method_text(spec, variable)),
    )


def method_text(spec: DomainSpec, variable: Variable) -> str:
    """How a derived variable is computed: its mapping's ``from``, else what its transform does."""
    if variable.from_:
        return variable.from_
    if variable.transform == "seq":
        return f"1, 2, ... over each subject's records in the order of {', '.join(spec.keys)}"
    if variable.transform == "study_day":
        return (
            f"study day of {variable.relative_to} relative to DM.RFSTDTC (SDTMIG 3.4 section 4.4.4): the days "
            "between the two dates, plus 1 on or after RFSTDTC; there is no day 0"
        )
    raise FhirLupusError(
        f"mappings/sdtm/domains/{spec.domain.lower()}.yaml: {variable.name} is derived: say how in `from`"
    )


def _codelist(define: ModuleType, used: UsedCodelist) -> Any:
    """The codelist with the terms used: CT terms with their NCI code, sponsor-defined ones marked as such."""
    label = used.codelist.label if used.codelist is not None else used.name
    codelist = define.CodeList(
        OID=used.oid, Name=label, DataType=used.data_type, StandardOID=STD_CT if used.is_ct else None
    )
    decoded = any(term.decode for term in used.terms)  # CodeListItem with a decode, else EnumeratedItem
    for order, term in enumerate(used.terms, start=1):
        fields: dict[str, Any] = {
            "CodedValue": term.value,
            "OrderNumber": order,
            "ExtendedValue": "Yes" if term.kind == "sponsor" and used.is_ct else None,
        }
        if term.code:
            fields["Alias"] = [define.Alias(Context="nci:ExtCodeID", Name=term.code)]
        if decoded:
            codelist.CodeListItem.append(
                define.CodeListItem(
                    **fields, Decode=define.Decode(TranslatedText=[_text_of(define, term.decode or term.value)])
                )
            )
        else:
            codelist.EnumeratedItem.append(define.EnumeratedItem(**fields))
    if used.is_ct and used.codelist is not None:
        codelist.Alias.append(define.Alias(Context="nci:ExtCodeID", Name=used.codelist.code))
    return codelist


def _text_of(define: ModuleType, text: str) -> Any:
    return define.TranslatedText(_content=text, lang="en")


def _slices(dataset: Dataset, value_list: ValueList) -> dict[str, list[Mapping[str, Value]]]:
    """The records of each value of ``value_list.by`` (empty ones left out), in value order."""
    slices: dict[str, list[Mapping[str, Value]]] = {}
    for record in dataset.records:
        if key := _text(record[value_list.by]):
            slices.setdefault(key, []).append(record)
    return dict(sorted(slices.items()))


def _value_list(define: ModuleType, dataset: Dataset, value_list: ValueList, wheres: dict[str, Any]) -> Any:
    domain = dataset.name
    variable = _variable(dataset.spec, value_list.variable)
    listed = define.ValueListDef(OID=_value_list_oid(domain, variable.name))
    for order, (key, records) in enumerate(_slices(dataset, value_list).items(), start=1):
        where = f"WC.{domain}.{value_list.by}.{_oid_part(key)}"
        if where not in wheres:
            wheres[where] = define.WhereClauseDef(
                OID=where,
                RangeCheck=[
                    define.RangeCheck(
                        Comparator="EQ",
                        SoftHard="Soft",
                        ItemOID=_item_oid(domain, value_list.by),
                        CheckValue=[define.CheckValue(_content=key)],
                    )
                ],
            )
        listed.ItemRef.append(
            define.ItemRef(
                ItemOID=_value_oid(domain, variable.name, key),
                OrderNumber=order,
                Mandatory="Yes" if all(_text(r[variable.name]) for r in records) else "No",
                MethodOID=_method_oid(domain, variable.name) if variable.origin == "Derived" else None,
                WhereClauseRef=[define.WhereClauseRef(WhereClauseOID=where)],
            )
        )
    return listed


def _value_items(define: ModuleType, dataset: Dataset, value_list: ValueList, used: set[str]) -> list[Any]:
    """One ItemDef per value of ``by``: the variable's type and length within those records, its origin, its
    codelist, and a description naming the value (``label``: LBTEST for LBTESTCD)."""
    domain = dataset.name
    variable = _variable(dataset.spec, value_list.variable)
    items = []
    for key, records in _slices(dataset, value_list).items():
        item = _shaped_item(
            define, _value_oid(domain, variable.name, key), variable, [r[variable.name] for r in records]
        )
        named = _text(records[0][value_list.label]) if value_list.label else ""
        item.Description = _description(
            define, f"{variable.label} ({value_list.by} {key}{f': {named}' if named else ''})"
        )
        if variable.codelist and f"{domain}.{variable.name}" in used:
            item.CodeListRef = define.CodeListRef(CodeListOID=codelist_oid(variable.codelist))
        item.Origin.append(_origin(define, variable))
        items.append(item)
    return items


def _variable(spec: DomainSpec, name: str) -> Variable:
    return next(v for v in spec.variables if v.name == name)


def _item_oid(domain: str, name: str) -> str:
    return f"IT.{domain}.{name}"


def _value_oid(domain: str, name: str, key: str) -> str:
    return f"IT.{domain}.{name}.{_oid_part(key)}"


def _value_list_oid(domain: str, name: str) -> str:
    return f"VL.{domain}.{name}"


def _method_oid(domain: str, name: str) -> str:
    return f"MT.{domain}.{name}"


def _oid_part(value: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in value)


def _text(value: object) -> str:
    return "" if value is None else str(value)
