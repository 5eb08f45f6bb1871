"""Generate the synthetic example data set for NCT00698191.

SYNTHETIC DATA - NO REAL PATIENT. Every subject, record number, date and value below
is drawn from a seeded pseudo-random generator; any resemblance to a real person is
coincidental. The data only *look like* the trial "Mesenchymal Stem Cells
Transplantation for Refractory SLE" (NCT00698191, Nanjing Drum Tower Hospital):
allogeneic bone-marrow MSC (AlloMSC) after a 24-hour cyclophosphamide pretreatment,
monthly follow-up for two years, regulatory T cells every three months.

README
------
``python examples/generate_nct00698191.py [--out DIR]`` writes, following
``docs/csv-layout.md`` (default ``DIR`` is ``examples/nct00698191`` next to this script):

* ``trial.txt`` - the NCT id;
* ``subjects.csv`` - 20 subjects MSC-001..MSC-020 enrolled 2007-2009, aged 18-54 (adults
  only: CKD-EPI is an adult equation), 17 women; half identified by a hospital MRN
  (``DT`` + 7 digits), half by a pseudonym (``P-`` + 8 hex digits). Twelve are in
  ``follow-up``, five ``off-study`` after the 24-month protocol and three ``withdrawn``
  (MSC-006 lost to follow-up after M05, MSC-011 moved away after M11, MSC-017 withdrew
  consent after M16);
* ``visits.csv`` - BL (pre-treatment admission, day 0), M01..M24 at 30-day steps
  +/- 5 days with 0-2 missed visits per subject, FU30/FU36 for some completers;
* ``procedures.csv`` - cyclophosphamide pretreatment on day 1 and the MSC infusion
  about 24 h later; for MSC-013 the infusion is 60 h after the pretreatment
  (a protocol deviation that ``fhir-lupus`` must report);
* ``labs.csv`` - renal panel, serology, urinalysis and blood count at every visit in
  the units of a Chinese hospital laboratory (eGFR by CKD-EPI 2009 from the reported
  creatinine, age and sex), CD4 % every three months, 24-h creatinine
  clearance at baseline and, for three subjects, a BUN in mg/dL from a referring
  laboratory. ANA is measured at every visit with anti-dsDNA, C3 and C4: the registration
  (/work/shared/seed/NCT00698191-registration.txt) lists "Lupus serology (ANA, dsDNA,
  C3, C4) - Monthly" as a primary outcome, and the study file
  (mappings/studies/NCT00698191.yaml, ``protocol.activities.serology``) expects all
  four at every monthly visit. (The example once had ANA only every three months, so
  ``fhir-lupus schedule`` reported it missing at two visits in three; the values of
  every other row did not change when it became monthly.) Creatinine is written
  ``umol/L``, in about 5 % of rows ``µmol/L``; a low anti-dsDNA is reported as ``<10``;
  a missed visit has no results;
* ``sledai.csv`` - one SLEDAI-2K assessment per visit; ``descriptors`` lists the
  clinical descriptors (and, in about one row in ten, a lab descriptor as well);
  ``reported_total`` is left empty for the tool to compute;
* ``treg.csv`` - CD4+CD25+FOXP3+ regulatory T cells at BL and M03..M24;
* ``screening.csv`` - the 20 enrolled subjects (BL 24-h protein and ALT, SLEDAI left to sledai.csv) and six
  candidates who did not enrol: aged 72, SLEDAI 6, 24-h protein 0.6 g, ALT 4 x ULN, pregnant, and one
  incomplete (ALT not measured); ``medications.csv`` - their failed prednisone, cyclophosphamide and/or
  mycophenolate mofetil courses (both from their own random stream);
* ``status_history.csv`` - each subject's lifecycle (mappings/fhir/lifecycle.yaml): ``candidate`` at
  screening 10-28 days before enrolment, ``eligible`` 0-5 days before it, ``on-study`` on ``enrolled_on``,
  ``on-study-intervention`` on the day of the MSC infusion, ``follow-up`` at discharge 2-4 days later, and
  ``off-study`` / ``withdrawn`` on ``off_study_on`` with the reason of subjects.csv (its own random stream, so
  the other files do not change).

The course: active lupus nephritis at baseline (proteinuria 1.5-6 g/24h, low C3/C4,
anti-dsDNA 150-600 IU/mL, haematuria, hypoalbuminaemia, SLEDAI 10-20), improving over
the first year in responders; MSC-009 does not respond, MSC-004 and MSC-015 relapse
at months 10 and 14. Output is deterministic: a rerun gives byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

SEED = 698191
NCT_ID = "NCT00698191"
ARM = "AlloMSC"
CST = timezone(timedelta(hours=8))
LAB = "Drum Tower Hospital Central Laboratory"
REFERRING_LAB = "Referring Hospital Laboratory"
N_SUBJECTS = 20
PROTOCOL_MONTHS = 24
FIRST_BASELINE = date(2007, 3, 12)

MALE_SUBJECTS = frozenset({"MSC-005", "MSC-012", "MSC-018"})
DEVIATION_SUBJECT = "MSC-013"
DEVIATION_DELAY = timedelta(hours=60)
#: subject -> (last month attended, reason)
DROPOUTS = {
    "MSC-006": (5, "lost to follow-up"),
    "MSC-011": (11, "moved away"),
    "MSC-017": (16, "withdrew consent"),
}
OFF_STUDY_COMPLETERS = frozenset({"MSC-001", "MSC-003", "MSC-008", "MSC-014", "MSC-020"})
NON_RESPONDERS = frozenset({"MSC-009"})
RELAPSES = {"MSC-004": 10, "MSC-015": 14}  # subject -> month of the renal flare
BUN_SUBJECTS = frozenset({"MSC-002", "MSC-010", "MSC-019"})
ASSESSORS = ("WJ", "SL", "FX", "LX")

#: SLEDAI-2K descriptors in CRF order with their weights.
SLEDAI_WEIGHTS = {
    key: weight
    for weight, keys in (
        (8, "seizure psychosis organic_brain_syndrome visual_disturbance cranial_nerve_disorder"),
        (8, "lupus_headache cva vasculitis"),
        (4, "arthritis myositis urinary_casts hematuria proteinuria pyuria"),
        (2, "rash alopecia mucosal_ulcers pleurisy pericarditis low_complement increased_dna_binding"),
        (1, "fever thrombocytopenia leukopenia"),
    )
    for key in keys.split()
}
#: clinical manifestations and the chance a subject has each at baseline
CLINICAL_AT_BASELINE = {
    "vasculitis": 0.06,
    "arthritis": 0.35,
    "urinary_casts": 0.45,
    "rash": 0.45,
    "alopecia": 0.35,
    "mucosal_ulcers": 0.25,
    "pleurisy": 0.08,
    "fever": 0.2,
}
RENAL_CLINICAL = frozenset({"urinary_casts"})
EXPLICIT_LAB_DESCRIPTOR_RATE = 0.15
ANA_TITERS = ("1:80", "1:160", "1:320", "1:640", "1:1280")


@dataclass(frozen=True)
class Analyte:
    """One line of the hospital's test catalogue as it appears in labs.csv."""

    key: str
    suffix: str  # result_id suffix
    unit: str
    specimen: str
    ref_low: str = ""
    ref_high: str = ""
    digits: int = 0
    method: str = ""
    local_code: str = ""
    lab: str = LAB


ANALYTES = {
    a.key: a
    for a in (
        Analyte("c3", "C3", "g/L", "serum", "0.9", "1.8", 2, local_code="DT-C3"),
        Analyte("c4", "C4", "g/L", "serum", "0.1", "0.4", 2, local_code="DT-C4"),
        Analyte("creatinine", "CREA", "umol/L", "serum", "44", "133", local_code="DT-CREA"),
        Analyte("urea", "UREA", "mmol/L", "serum", "2.9", "8.2", 1, local_code="DT-UREA"),
        Analyte("egfr", "EGFR", "mL/min/1.73m2", "serum", "90", method="ckd-epi-2009", local_code="DT-EGFR"),
        Analyte("anti_dsdna", "DSDNA", "IU/mL", "serum", "", "100", 1, local_code="DT-DSDNA"),
        Analyte("ana", "ANA", "", "serum", method="ifa"),
        Analyte("urine_protein_24h", "UP24", "g/24h", "urine-24h", "", "0.15", 2, local_code="DT-UPRO24"),
        Analyte("urine_protein_dipstick", "UPRO", "", "urine"),
        Analyte("urine_blood_dipstick", "UBLD", "", "urine"),
        Analyte("urine_rbc", "URBC", "/HPF", "urine", "", "3"),
        Analyte("urine_wbc", "UWBC", "/HPF", "urine", "", "5"),
        Analyte("albumin", "ALB", "g/L", "serum", "35", "55", 1, local_code="DT-ALB"),
        Analyte("hemoglobin", "HGB", "g/L", "blood", "115", "150", local_code="DT-HGB"),
        Analyte("wbc", "WBC", "10^9/L", "blood", "3.5", "9.5", 2, local_code="DT-WBC"),
        Analyte("platelets", "PLT", "10^9/L", "blood", "125", "350", local_code="DT-PLT"),
        Analyte("alt", "ALT", "U/L", "serum", "7", "40", local_code="DT-ALT"),
        Analyte("lymphocytes", "LYM", "10^9/L", "blood", "1.1", "3.2", 2),
        Analyte("cd4_percent", "CD4", "%", "blood", digits=1),
        Analyte("creatinine_clearance", "CCR", "mL/min", "urine-24h", "80", "120"),
        Analyte("bun", "BUN", "mg/dL", "serum", "7", "20", 1, lab=REFERRING_LAB),
    )
}
MALE_HEMOGLOBIN_REF = ("130", "175")
QUARTERLY = ("cd4_percent",)
BASELINE_ONLY = ("creatinine_clearance", "bun")  # bun only for BUN_SUBJECTS
# ANA is monthly serology (see the module docstring). It comes last of the every-visit panel, where the quarterly
# panel used to put it, so the visits that always had it keep their rows in the same order.
EVERY_VISIT = (*(key for key in ANALYTES if key not in (*QUARTERLY, *BASELINE_ONLY, "ana")), "ana")


@dataclass(frozen=True)
class Course:
    """Disease activity over time: 1 = baseline activity, 0 = remission."""

    floor_renal: float
    floor_systemic: float
    tau_renal: float  # months
    tau_systemic: float
    relapse_month: int | None = None
    flare_renal: float = 0.0
    flare_systemic: float = 0.0


@dataclass(frozen=True)
class Marker:
    """A lab marker moving from its baseline value towards its remission value."""

    start: float
    target: float
    renal: bool  # follows renal (else systemic) activity
    log: bool = False

    def at(self, activity: float) -> float:
        if self.log:
            return math.exp(math.log(self.target) + activity * math.log(self.start / self.target))
        return self.target + activity * (self.start - self.target)


@dataclass(frozen=True)
class Visit:
    code: str
    month: int
    on: date
    collected_at: datetime


@dataclass(frozen=True)
class Subject:
    subject_id: str
    female: bool
    birth_date: date
    enrolled_on: date
    mrn: str
    pseudonym: str
    status: str
    off_study_on: date | None
    off_study_reason: str
    bsa: float
    course: Course
    markers: dict[str, Marker]
    urea_ratio: float  # urea (mmol/L) per creatinine (mmol/L)
    alt_base: float
    ana_start: int  # index in ANA_TITERS
    ana_drop: int
    visits: tuple[Visit, ...]


# --- helpers -------------------------------------------------------------------------


def fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def ckd_epi_2009(creatinine_umol: float, age: int, *, female: bool) -> float:
    """eGFR (mL/min/1.73m2) by the 2009 CKD-EPI creatinine equation, non-black."""
    scr = creatinine_umol / 88.4
    kappa, alpha = (0.7, -0.329) if female else (0.9, -0.411)
    ratio = scr / kappa
    egfr: float = 141 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.209 * 0.993**age
    return egfr * 1.018 if female else egfr


def visit_code(month: int) -> str:
    if month == 0:
        return "BL"
    return f"M{month:02d}" if month <= PROTOCOL_MONTHS else f"FU{month}"


def activity(course: Course, month: int) -> tuple[float, float]:
    """(renal, systemic) activity at a month after MSC transplantation."""
    renal = course.floor_renal + (1 - course.floor_renal) * math.exp(-month / course.tau_renal)
    systemic = course.floor_systemic + (1 - course.floor_systemic) * math.exp(-month / course.tau_systemic)
    if course.relapse_month is not None and month >= course.relapse_month:
        since = month - course.relapse_month
        bump = min(1.0, (since + 1) / 2) * math.exp(-max(0, since - 1) / 6)
        renal = min(1.0, renal + course.flare_renal * bump)
        systemic = min(1.0, systemic + course.flare_systemic * bump)
    return renal, systemic


# --- subjects and visits -------------------------------------------------------------


def make_course(subject_id: str, rng: random.Random) -> Course:
    u = rng.uniform
    if subject_id in NON_RESPONDERS:
        return Course(u(0.75, 0.9), u(0.55, 0.75), 4.0, 3.0)
    if subject_id not in RELAPSES and rng.random() < 0.4:  # partial responder
        return Course(u(0.15, 0.3), u(0.1, 0.25), u(2.5, 5.0), u(1.2, 2.5))
    return Course(
        u(0.0, 0.05),
        u(0.0, 0.05),
        u(2.5, 5.0),
        u(1.2, 2.5),
        relapse_month=RELAPSES.get(subject_id),
        flare_renal=u(0.6, 0.8),
        flare_systemic=u(0.5, 0.7),
    )


def make_markers(rng: random.Random, *, female: bool, responder: bool) -> dict[str, Marker]:
    u = rng.uniform
    normal_creatinine = u(55, 80) if female else u(70, 95)
    impairment = u(1.0, 1.3) if rng.random() < 0.7 else u(1.4, 2.2)
    creatinine = normal_creatinine * impairment
    # responders recover part of the lost function; the non-responder keeps losing it
    creatinine_target = normal_creatinine * (1 + (impairment - 1) * 0.4) if responder else creatinine * 1.3
    hemoglobin = (u(85, 112), u(118, 135)) if female else (u(100, 125), u(135, 152))
    return {
        "urine_protein_24h": Marker(u(1.5, 6.0), u(0.08, 0.3), renal=True),
        "c3": Marker(u(0.3, 0.7), u(0.9, 1.2), renal=False),
        "c4": Marker(u(0.03, 0.08), u(0.13, 0.25), renal=False),
        "anti_dsdna": Marker(u(150, 600), u(5, 60), renal=False, log=True),
        "urine_rbc": Marker(u(8, 40), u(0, 2), renal=True),
        "urine_wbc": Marker(u(2, 14), u(0, 3), renal=True),
        "albumin": Marker(u(20, 30), u(38, 45), renal=True),
        "creatinine": Marker(creatinine, creatinine_target, renal=True),
        "hemoglobin": Marker(*hemoglobin, renal=False),
        "wbc": Marker(u(2.4, 6.5), u(4.5, 7.5), renal=False),
        "platelets": Marker(u(70, 260), u(160, 280), renal=False),
        "lymphocytes": Marker(u(0.5, 1.2), u(1.1, 2.1), renal=False),
        "cd4_percent": Marker(u(18, 30), u(28, 40), renal=False),
        "treg": Marker(u(1.5, 4.0), u(4.5, 8.0) if responder else u(2.5, 3.5), renal=False),
    }


def attended_months(subject_id: str, rng: random.Random) -> list[int]:
    last = DROPOUTS[subject_id][0] if subject_id in DROPOUTS else PROTOCOL_MONTHS
    missable = list(range(2, last))  # BL, M01, the last visit are always attended
    missed = set(rng.sample(missable, rng.choice((0, 1, 1, 2))))
    months = [m for m in range(last + 1) if m not in missed]
    if subject_id not in DROPOUTS and subject_id not in OFF_STUDY_COMPLETERS:
        months += [m for m, p in ((30, 0.75), (36, 0.5)) if rng.random() < p]
    return months


def make_visits(baseline: date, months: Iterable[int], rng: random.Random) -> tuple[Visit, ...]:
    visits = []
    for month in months:
        on = baseline + timedelta(days=30 * month + (rng.randint(-5, 5) if month else 0))
        drawn = datetime.combine(on, time(7, 0), CST) + timedelta(minutes=rng.randint(0, 120))
        visits.append(Visit(visit_code(month), month, on, drawn))
    return tuple(visits)


def make_subject(index: int, with_mrn: bool, rng: random.Random) -> Subject:
    subject_id = f"MSC-{index + 1:03d}"
    female = subject_id not in MALE_SUBJECTS
    baseline = FIRST_BASELINE + timedelta(days=48 * index + rng.randint(0, 20))
    age = min(70, max(18, round(rng.gauss(31, 10))))
    birth = baseline - timedelta(days=round(365.25 * age) + rng.randint(30, 330))
    visits = make_visits(baseline, attended_months(subject_id, rng), rng)
    status, off_on, reason = "follow-up", None, ""
    if subject_id in DROPOUTS:
        status, reason = "withdrawn", DROPOUTS[subject_id][1]
        off_on = baseline + timedelta(days=30 * (visits[-1].month + 1) + rng.randint(-3, 10))
    elif subject_id in OFF_STUDY_COMPLETERS:
        status, off_on, reason = "off-study", visits[-1].on, "completed 24-month protocol"
    course = make_course(subject_id, rng)
    responder = subject_id not in NON_RESPONDERS
    return Subject(
        subject_id=subject_id,
        female=female,
        birth_date=birth,
        enrolled_on=baseline - timedelta(days=rng.randint(3, 14)),
        mrn=f"DT{rng.randrange(10**7):07d}" if with_mrn else "",
        pseudonym="" if with_mrn else f"P-{rng.getrandbits(32):08x}",
        status=status,
        off_study_on=off_on,
        off_study_reason=reason,
        bsa=rng.uniform(1.48, 1.72) if female else rng.uniform(1.66, 1.82),
        course=course,
        markers=make_markers(rng, female=female, responder=responder),
        urea_ratio=rng.uniform(55, 85),
        alt_base=rng.uniform(12, 30),
        ana_start=rng.choice((2, 3, 4)),
        ana_drop=rng.choice((2, 3)) if responder else rng.choice((0, 1)),
        visits=visits,
    )


def make_subjects() -> list[Subject]:
    master = random.Random(SEED)
    with_mrn = set(master.sample(range(N_SUBJECTS), N_SUBJECTS // 2))
    return [make_subject(i, i in with_mrn, random.Random(f"{SEED}:MSC-{i + 1:03d}")) for i in range(N_SUBJECTS)]


# --- measurements --------------------------------------------------------------------


def protein_dipstick(protein_24h: float, rng: random.Random) -> str:
    """Dipstick grade of a first-morning urine, about as concentrated as 0.8-1.6 L/day would be."""
    mg_per_dl = protein_24h * 1000 / rng.uniform(8, 16)
    for limit, grade in ((15, "negative"), (30, "trace"), (100, "1+"), (300, "2+"), (1000, "3+")):
        if mg_per_dl < limit:
            return grade
    return "4+"


def blood_dipstick(rbc_per_hpf: float) -> str:
    for limit, grade in ((3, "negative"), (6, "trace"), (16, "1+"), (41, "2+")):
        if rbc_per_hpf < limit:
            return grade
    return "3+"


def measure(subject: Subject, visit: Visit, rng: random.Random) -> dict[str, float | str]:
    """Every lab value of a visit, rounded as reported; baseline values are noise-free."""
    renal, systemic = activity(subject.course, visit.month)
    noise = 0.0 if visit.month == 0 else 1.0

    def at(key: str) -> float:
        marker = subject.markers[key]
        return marker.at(renal if marker.renal else systemic)

    def rel(sd: float) -> float:
        return math.exp(rng.gauss(0, sd * noise))

    def add(sd: float) -> float:
        return rng.gauss(0, sd * noise)

    protein = max(0.03, round(at("urine_protein_24h") * rel(0.2), 2))
    rbc = max(0, round(at("urine_rbc") * rel(0.25) + add(0.8)))
    creatinine = round(at("creatinine") * rel(0.05))
    urea = round(creatinine * subject.urea_ratio / 1000 * rel(0.08), 1)
    egfr = round(ckd_epi_2009(creatinine, age_on(subject.birth_date, visit.on), female=subject.female))
    ana = subject.ana_start - round((1 - systemic) * subject.ana_drop)
    if visit.month:
        ana += rng.choice((-1, 0, 0, 0, 1))
    alt_spike = 2.2 if rng.random() < 0.05 else 1.0
    return {
        "c3": max(0.15, round(at("c3") + add(0.05), 2)),
        "c4": max(0.02, round(at("c4") + add(0.012), 2)),
        "creatinine": creatinine,
        "urea": urea,
        "egfr": egfr,
        "anti_dsdna": round(at("anti_dsdna") * rel(0.15), 1),
        "ana": ANA_TITERS[min(max(ana, 0), len(ANA_TITERS) - 1)],
        "urine_protein_24h": protein,
        "urine_protein_dipstick": protein_dipstick(protein, rng),
        "urine_blood_dipstick": blood_dipstick(rbc),
        "urine_rbc": rbc,
        "urine_wbc": max(0, round(at("urine_wbc") * rel(0.25) + add(0.8))),
        "albumin": round(at("albumin") + add(1.2), 1),
        "hemoglobin": round(at("hemoglobin") + add(4)),
        "wbc": round(at("wbc") * rel(0.12), 2),
        "platelets": round(at("platelets") * rel(0.1)),
        "alt": round(subject.alt_base * rel(0.25) * alt_spike),
        "lymphocytes": round(at("lymphocytes") * rel(0.15), 2),
        "cd4_percent": round(at("cd4_percent") + add(2.0), 1),
        "treg": max(0.5, round(at("treg") + add(0.3), 1)),
        "creatinine_clearance": round(egfr * subject.bsa / 1.73 * rng.uniform(1.05, 1.25)),
        "bun": round(urea * 2.801 * rng.uniform(0.95, 1.05), 1),
    }


def panel(subject: Subject, visit: Visit) -> list[str]:
    keys = list(EVERY_VISIT)
    if visit.month % 3 == 0:
        keys += QUARTERLY
    if visit.month == 0:
        keys.append("creatinine_clearance")
        if subject.subject_id in BUN_SUBJECTS:
            keys.append("bun")
    return keys


def lab_row(subject: Subject, visit: Visit, key: str, value: float | str, rng: random.Random) -> dict[str, str]:
    analyte = ANALYTES[key]
    unit, (low, high) = analyte.unit, (analyte.ref_low, analyte.ref_high)
    if key == "creatinine" and rng.random() < 0.05:
        unit = "µmol/L"
    if key == "hemoglobin" and not subject.female:
        low, high = MALE_HEMOGLOBIN_REF
    if isinstance(value, str):
        text = value
    elif key == "anti_dsdna" and value < 10:
        text = "<10"
    else:
        text = fmt(value, analyte.digits)
    return {
        "result_id": f"L-{subject.subject_id}-{visit.code}-{analyte.suffix}",
        "subject_id": subject.subject_id,
        "visit_code": visit.code,
        "analyte": key,
        "value": text,
        "unit": unit,
        "ref_low": low,
        "ref_high": high,
        "method": analyte.method,
        "specimen": analyte.specimen,
        "collected_at": stamp(visit.collected_at),
        "lab": analyte.lab,
        "local_code": analyte.local_code,
    }


# --- SLEDAI-2K -----------------------------------------------------------------------


def lab_descriptors(values: dict[str, float | str]) -> set[str]:
    """The SLEDAI-2K descriptors the labs of one visit support (the tool derives these)."""

    def num(key: str) -> float:
        return float(values[key])

    found = {
        "proteinuria": num("urine_protein_24h") > 0.5,
        "hematuria": num("urine_rbc") > 5,
        "pyuria": num("urine_wbc") > 5,
        "low_complement": num("c3") < 0.9 or num("c4") < 0.1,
        "increased_dna_binding": num("anti_dsdna") > 100,
        "thrombocytopenia": num("platelets") < 100,
        "leukopenia": num("wbc") < 3.0,
    }
    return {name for name, present in found.items() if present}


def baseline_manifestations(baseline_labs: set[str], rng: random.Random) -> list[str]:
    """Clinical descriptors at baseline, trimmed to a SLEDAI-2K total drawn from 10-20."""
    present = [name for name, p in CLINICAL_AT_BASELINE.items() if rng.random() < p]
    lab_score = sum(SLEDAI_WEIGHTS[name] for name in baseline_labs)
    ceiling = rng.randint(max(10, lab_score), max(20, lab_score))
    while present and lab_score + sum(SLEDAI_WEIGHTS[name] for name in present) > ceiling:
        present.remove(rng.choice(present))
    return present


def sledai_row(
    subject: Subject, visit: Visit, clinical: Sequence[str], labs: set[str], rng: random.Random
) -> dict[str, str]:
    renal, systemic = activity(subject.course, visit.month)
    if visit.month == 0:
        listed = set(clinical)
    else:
        listed = {name for name in clinical if rng.random() < 0.9 * (renal if name in RENAL_CLINICAL else systemic)}
    if labs and rng.random() < EXPLICIT_LAB_DESCRIPTOR_RATE:
        listed.add(rng.choice(sorted(labs)))
    assessor = ASSESSORS[0] if rng.random() < 0.7 else rng.choice(ASSESSORS[1:])
    return {
        "subject_id": subject.subject_id,
        "visit_code": visit.code,
        "assessed_on": visit.on.isoformat(),
        "descriptors": ";".join(name for name in SLEDAI_WEIGHTS if name in listed),
        "window_days": "10",
        "reported_total": "",
        "assessor": assessor,
    }


# --- procedures ----------------------------------------------------------------------


def procedure_row(subject: Subject, kind: str, start: datetime, hours: int, **doses: str) -> dict[str, str]:
    suffix = "CYC" if kind == "cyclophosphamide_pretreatment" else "MSC"
    row = {
        "procedure_id": f"PR-{subject.subject_id}-{suffix}",
        "subject_id": subject.subject_id,
        "kind": kind,
        "status": "completed",
        "started_at": stamp(start),
        "ended_at": stamp(start + timedelta(hours=hours)),
        "route": "intravenous",
    }
    return row | {name: doses.get(name, "") for name in ("dose_mg", "dose_mg_per_m2", "cells_per_kg", "donor_id")}


def procedure_rows(subject: Subject, donor_id: str, rng: random.Random) -> list[dict[str, str]]:
    """Cyclophosphamide on day 1 (about 08:00), the MSC infusion about 24 h later."""
    day1 = subject.visits[0].on + timedelta(days=1)
    cyc_start = datetime.combine(day1, time(8, 0), CST) + timedelta(minutes=rng.randrange(-30, 50, 5))
    if subject.subject_id == DEVIATION_SUBJECT:
        msc_start = cyc_start + DEVIATION_DELAY
    else:
        msc_start = cyc_start + timedelta(hours=24, minutes=rng.randrange(-45, 50, 5))
    per_m2 = rng.choice((800, 850, 900, 950, 1000))
    dose_mg = round(per_m2 * subject.bsa / 10) * 10
    return [
        procedure_row(
            subject,
            "cyclophosphamide_pretreatment",
            cyc_start,
            2,
            dose_mg=str(dose_mg),
            dose_mg_per_m2=str(per_m2),
        ),
        procedure_row(subject, "msc_infusion", msc_start, 1, cells_per_kg="1000000", donor_id=donor_id),
    ]


def donor_ids(subjects: Sequence[Subject]) -> list[str]:
    """One donor per cell product, numbered within the year of transplantation."""
    per_year: dict[int, int] = {}
    ids = []
    for subject in subjects:
        year = subject.visits[0].on.year
        per_year[year] = per_year.get(year, 0) + 1
        ids.append(f"D-{year}-{per_year[year]:02d}")
    return ids


# --- adverse events ------------------------------------------------------------------
# Own generator (seeded apart from everything above), so adding this file changed no other example file.
# Terms are CTCAE v5.0 terms as text; no MedDRA or NCI codes are written (none is invented).

#: (term as reported, CTCAE term, grades, days after the suspect's start for the onset, days to resolve)
INFUSION_REACTIONS = (
    ("fever after MSC infusion", "Fever", (1, 2), (0, 0), (1, 2)),
    ("chills during MSC infusion", "Chills", (1, 1), (0, 0), (0, 1)),
    ("rash after MSC infusion", "Rash maculo-papular", (1, 2), (0, 1), (2, 6)),
)
LEUKOPENIA = ("leukopenia", "White blood cell decreased", (2, 3), (7, 14), (7, 21))
CYC_INFECTIONS = (
    ("upper respiratory tract infection", "Upper respiratory infection", (2, 2), (20, 80), (5, 12)),
    ("urinary tract infection", "Urinary tract infection", (2, 3), (25, 90), (5, 14)),
    ("herpes zoster", "Herpes zoster", (2, 3), (30, 90), (14, 28)),
    ("pneumonia", "Lung infection", (3, 3), (30, 90), (10, 21)),
)
UNRELATED_EVENTS = (
    ("headache", "Headache", (1, 1)),
    ("gastroenteritis", "Diarrhea", (1, 2)),
    ("hypertension", "Hypertension", (2, 2)),
    ("knee pain", "Arthralgia", (1, 1)),
)
ADVERSE_EVENTS_FILE = "adverse_events.csv"


def adverse_event_rows(tables: dict[str, list[dict[str, str]]]) -> list[dict[str, str]]:
    """Infusion reactions on the infusion day, cytopenia and infections after cyclophosphamide, a few others."""
    rng = random.Random(f"{SEED}:adverse-events")
    subjects = {row["subject_id"]: row for row in tables["subjects.csv"]}
    started = {
        (row["subject_id"], row["kind"]): datetime.fromisoformat(row["started_at"]).date()
        for row in tables["procedures.csv"]
    }
    rows: list[dict[str, str]] = []

    def add(subject_id: str, term: str, ctcae: str, grade: int, onset: date, days: int | None, **rest: str) -> None:
        off = subjects[subject_id]["off_study_on"]
        if off and onset > date.fromisoformat(off):
            return
        serious = rest.pop("serious_criteria", "")
        rows.append(
            {
                "event_id": f"AE-{subject_id}-{len([r for r in rows if r['subject_id'] == subject_id]) + 1:02d}",
                "subject_id": subject_id,
                "term": term,
                "meddra_code": "",
                "ctcae_term": ctcae,
                "ctcae_code": "",
                "grade": str(grade),
                "serious": "yes" if serious else "no",
                "seriousness_criteria": serious,
                "outcome": "recovered" if days is not None else rest.pop("outcome", "not_recovered"),
                "onset_on": onset.isoformat(),
                "resolved_on": (onset + timedelta(days=days)).isoformat() if days is not None else "",
                "reporter": rng.choice(ASSESSORS),
                "recorded_on": (onset + timedelta(days=rng.randint(0, 3))).isoformat(),
                **rest,
            }
        )

    ids = sorted(subjects)
    for subject_id in sorted(rng.sample(ids, 8)):
        term, ctcae, grades, onset_days, resolve_days = rng.choice(INFUSION_REACTIONS)
        onset = started[(subject_id, "msc_infusion")] + timedelta(days=rng.randint(*onset_days))
        add(
            subject_id, term, ctcae, rng.randint(*grades), onset, rng.randint(*resolve_days),
            related_to="msc_infusion", causality=rng.choice(("possible", "probable", "probable")),
        )  # fmt: skip
    for subject_id in sorted(rng.sample(ids, 5)):
        term, ctcae, grades, onset_days, resolve_days = LEUKOPENIA
        onset = started[(subject_id, "cyclophosphamide_pretreatment")] + timedelta(days=rng.randint(*onset_days))
        add(
            subject_id, term, ctcae, rng.randint(*grades), onset, rng.randint(*resolve_days),
            related_to="cyclophosphamide", causality="probable",
        )  # fmt: skip
    for subject_id in sorted(rng.sample(ids, 10)):
        term, ctcae, grades, onset_days, resolve_days = rng.choice(CYC_INFECTIONS)
        grade = rng.randint(*grades)
        onset = started[(subject_id, "cyclophosphamide_pretreatment")] + timedelta(days=rng.randint(*onset_days))
        serious = grade == 3 and (ctcae == "Lung infection" or rng.random() < 0.5)
        related = "both" if ctcae == "Lung infection" and rng.random() < 0.5 else "cyclophosphamide"
        add(
            subject_id, term, ctcae, grade, onset, rng.randint(*resolve_days),
            serious_criteria="hospitalization" if serious else "", related_to=related, causality="possible",
        )  # fmt: skip
    for index, subject_id in enumerate(sorted(rng.sample(ids, 5))):
        term, ctcae, grades = UNRELATED_EVENTS[index % len(UNRELATED_EVENTS)]
        onset = date.fromisoformat(subjects[subject_id]["enrolled_on"]) + timedelta(days=rng.randint(60, 400))
        ongoing = ctcae == "Hypertension"
        add(
            subject_id, term, ctcae, rng.randint(*grades), onset, None if ongoing else rng.randint(2, 10),
            related_to="none", causality="",
        )  # fmt: skip
    return sorted(rows, key=lambda row: (row["subject_id"], row["onset_on"], row["event_id"]))


# --- subject lifecycle ---------------------------------------------------------------


def status_history_rows(subject: Subject, procedures: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """candidate -> eligible -> on-study (enrolled_on) -> on-study-intervention (the MSC infusion) -> follow-up,
    then off-study or withdrawn as subjects.csv says. Its own random stream: the other files stay byte-identical."""
    rng = random.Random(f"{SEED}:{subject.subject_id}:lifecycle")
    infusion = date.fromisoformat(next(p for p in procedures if p["kind"] == "msc_infusion")["started_at"][:10])
    steps = [
        ("candidate", subject.enrolled_on - timedelta(days=rng.randint(10, 28)), ""),
        ("eligible", subject.enrolled_on - timedelta(days=rng.randint(0, 5)), ""),
        ("on-study", subject.enrolled_on, ""),
        ("on-study-intervention", infusion, ""),
        ("follow-up", infusion + timedelta(days=rng.randint(2, 4)), ""),
    ]
    if subject.off_study_on:
        steps.append((subject.status, subject.off_study_on, subject.off_study_reason))
    return [
        {"subject_id": subject.subject_id, "status": status, "on": on.isoformat(), "reason": reason}
        for status, on, reason in steps
    ]


# --- screening and medication history -------------------------------------------------
# Own generator (seeded apart from everything above), so adding these files changed no other example file.
# Enrolled subjects screen eligible: their screening values are their BL labs (24-h protein, ALT with the
# lab's upper limit), their SLEDAI-2K is left empty so `fhir-lupus screen` takes the BL score of sledai.csv.
# Six candidates did not enrol, each for one planted reason (the last one incomplete: ALT not measured).

SCREENING_FILE = "screening.csv"
MEDICATIONS_FILE = "medications.csv"
SCREENING_FINDINGS = (
    "end_stage_renal_failure",
    "severe_heart_failure",
    "severe_pulmonary_failure",
    "other_major_organ_damage",
    "uncontrolled_infection",
    "pregnant",
    "breast_feeding",
    "pregnancy_intended",
)
#: candidate -> (why they did not enrol, screening date, birth date, sex)
NOT_ENROLLED = {
    "SCR-001": ("age 72", date(2007, 6, 4), date(1934, 11, 20), "female"),
    "SCR-002": ("SLEDAI 6", date(2007, 9, 17), date(1981, 2, 3), "female"),
    "SCR-003": ("24-h protein 0.6 g", date(2008, 1, 21), date(1975, 7, 9), "male"),
    "SCR-004": ("ALT 4 x ULN", date(2008, 5, 12), date(1969, 4, 28), "female"),
    "SCR-005": ("pregnant", date(2008, 10, 6), date(1984, 12, 15), "female"),
    "SCR-006": ("ALT not measured", date(2009, 3, 2), date(1978, 9, 30), "female"),
}


def prior_regimens(subject_id: str, before: date, rng: random.Random) -> list[dict[str, str]]:
    """Failed prednisone > 20 mg/day, then failed cyclophosphamide pulses and/or mycophenolate mofetil 2 g/day."""
    rows = []

    def add(drug: str, dose: str, unit: str, frequency: str, route: str, start: date, months: int) -> None:
        end = min(start + timedelta(days=30 * months + rng.randint(0, 20)), before - timedelta(days=7))
        rows.append(
            {
                "medication_id": f"MED-{subject_id}-{len(rows) + 1}",
                "subject_id": subject_id,
                "drug": drug,
                "dose": dose,
                "dose_unit": unit,
                "frequency": frequency,
                "route": route,
                "started_on": start.isoformat(),
                "ended_on": end.isoformat(),
                "outcome": "failed",
                "note": "",
            }
        )

    start = before - timedelta(days=rng.randint(420, 900))
    add("prednisone", str(rng.choice((30, 40, 50, 60))), "mg", "qd", "oral", start, rng.randint(4, 10))
    plan = rng.choice(("cyc", "cyc", "mmf", "both"))
    second = start + timedelta(days=rng.randint(20, 60))
    if plan in ("cyc", "both"):
        add("cyclophosphamide", rng.choice(("0.4", "0.5", "0.6")), "g/m2", "q2w", "intravenous", second, 7)
        second += timedelta(days=250)
    if plan in ("mmf", "both"):
        add("mycophenolate_mofetil", "1", "g", "bid", "oral", min(second, before - timedelta(days=150)), 4)
    return rows


def screening_tables(tables: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    """screening.csv (enrolled subjects, then the six who did not enrol) and medications.csv for all of them."""
    rng = random.Random(f"{SEED}:screening")
    # screened on the day status_history.csv makes them a candidate, when that file is generated too
    candidate_on = {
        r["subject_id"]: r["on"] for r in tables.get("status_history.csv", []) if r["status"] == "candidate"
    }
    baseline = {(r["subject_id"], r["analyte"]): r for r in tables["labs.csv"] if r["visit_code"] == "BL"}
    screening: list[dict[str, str]] = []
    medications: list[dict[str, str]] = []

    def row(subject_id: str, screened: date, consent: date, birth: str, sex: str, **values: str) -> dict[str, str]:
        findings = {name: "no" for name in SCREENING_FINDINGS}
        if sex == "male":
            findings |= {"pregnant": "", "breast_feeding": ""}
        return {
            "subject_id": subject_id,
            "screened_on": screened.isoformat(),
            "consent_signed": "yes",
            "consent_on": consent.isoformat(),
            "birth_date": birth,
            "sex": sex,
            "acr_criteria_met": "yes",
            "contraception_agreed": "yes",
            **findings,
            "alt": "",
            "alt_uln": "",
            "urine_protein_24h": "",
            "urine_protein_unit": "",
            "sledai_total": "",
            "note": "",
        } | values

    for subject in tables["subjects.csv"]:
        subject_id = subject["subject_id"]
        enrolled = date.fromisoformat(subject["enrolled_on"])
        if subject_id in candidate_on:
            screened = date.fromisoformat(candidate_on[subject_id])
        else:
            screened = enrolled - timedelta(days=rng.randint(10, 28))
        alt, protein = baseline[(subject_id, "alt")], baseline[(subject_id, "urine_protein_24h")]
        screening.append(
            row(
                subject_id,
                screened,
                enrolled,
                subject["birth_date"],
                subject["sex"],
                alt=alt["value"],
                alt_uln=alt["ref_high"],
                urine_protein_24h=protein["value"],
                urine_protein_unit=protein["unit"],
            )
        )
        medications += prior_regimens(subject_id, screened, rng)
    for subject_id, (reason, screened, birth, sex) in NOT_ENROLLED.items():
        values = {
            "alt": str(rng.randint(15, 35)),
            "alt_uln": "40",
            "urine_protein_24h": fmt(rng.uniform(1.3, 4.5), 2),
            "urine_protein_unit": "g/24h",
            "sledai_total": str(rng.randint(9, 18)),
            "note": f"did not enrol: {reason}",
        }
        if subject_id == "SCR-002":
            values["sledai_total"] = "6"
        elif subject_id == "SCR-003":
            values |= {"urine_protein_24h": "600", "urine_protein_unit": "mg/24h"}
        elif subject_id == "SCR-004":
            values["alt"] = "160"
        elif subject_id == "SCR-005":
            values["pregnant"] = "yes"
        elif subject_id == "SCR-006":
            values |= {"alt": "", "alt_uln": ""}
        screening.append(row(subject_id, screened, screened, birth.isoformat(), sex, **values))
        medications += prior_regimens(subject_id, screened, rng)
    return {SCREENING_FILE: screening, MEDICATIONS_FILE: medications}


# --- assembling the files ------------------------------------------------------------

COLUMNS = {
    name: tuple(columns.split())
    for name, columns in (
        (
            "subjects.csv",
            "subject_id mrn pseudonym sex birth_date enrolled_on status off_study_on off_study_reason arm",
        ),
        ("visits.csv", "subject_id visit_code visit_date"),
        (
            "labs.csv",
            "result_id subject_id visit_code analyte value unit ref_low ref_high method specimen"
            " collected_at lab local_code",
        ),
        ("sledai.csv", "subject_id visit_code assessed_on descriptors window_days reported_total assessor"),
        ("treg.csv", "measurement_id subject_id visit_code measured_at percent lab"),
        (
            "procedures.csv",
            "procedure_id subject_id kind status started_at ended_at dose_mg dose_mg_per_m2"
            " cells_per_kg route donor_id",
        ),
        ("status_history.csv", "subject_id status on reason"),
        (
            ADVERSE_EVENTS_FILE,
            "event_id subject_id term meddra_code ctcae_term ctcae_code grade serious seriousness_criteria outcome"
            " onset_on resolved_on related_to causality reporter recorded_on",
        ),
        (
            SCREENING_FILE,
            "subject_id screened_on consent_signed consent_on birth_date sex acr_criteria_met contraception_agreed "
            + " ".join(SCREENING_FINDINGS)
            + " alt alt_uln urine_protein_24h urine_protein_unit sledai_total note",
        ),
        (
            MEDICATIONS_FILE,
            "medication_id subject_id drug dose dose_unit frequency route started_on ended_on outcome note",
        ),
    )
}


def subject_row(subject: Subject) -> dict[str, str]:
    return {
        "subject_id": subject.subject_id,
        "mrn": subject.mrn,
        "pseudonym": subject.pseudonym,
        "sex": "female" if subject.female else "male",
        "birth_date": subject.birth_date.isoformat(),
        "enrolled_on": subject.enrolled_on.isoformat(),
        "status": subject.status,
        "off_study_on": subject.off_study_on.isoformat() if subject.off_study_on else "",
        "off_study_reason": subject.off_study_reason,
        "arm": ARM,
    }


def subject_tables(subject: Subject, donor_id: str) -> dict[str, list[dict[str, str]]]:
    """All rows of one subject, file by file."""
    rng = random.Random(f"{SEED}:{subject.subject_id}:course")
    tables: dict[str, list[dict[str, str]]] = {name: [] for name in COLUMNS}
    tables["subjects.csv"].append(subject_row(subject))
    tables["procedures.csv"] += procedure_rows(subject, donor_id, rng)
    tables["status_history.csv"] += status_history_rows(subject, tables["procedures.csv"])
    clinical: list[str] = []
    for visit in subject.visits:
        tables["visits.csv"].append(
            {"subject_id": subject.subject_id, "visit_code": visit.code, "visit_date": visit.on.isoformat()}
        )
        values = measure(subject, visit, rng)
        tables["labs.csv"] += [lab_row(subject, visit, key, values[key], rng) for key in panel(subject, visit)]
        labs = lab_descriptors(values)
        if visit.month == 0:
            clinical = baseline_manifestations(labs, rng)
        tables["sledai.csv"].append(sledai_row(subject, visit, clinical, labs, rng))
        if visit.month % 3 == 0 and visit.month <= PROTOCOL_MONTHS:
            tables["treg.csv"].append(
                {
                    "measurement_id": f"T-{subject.subject_id}-{visit.code}",
                    "subject_id": subject.subject_id,
                    "visit_code": visit.code,
                    "measured_at": stamp(visit.collected_at),
                    "percent": fmt(float(values["treg"]), 1),
                    "lab": LAB,
                }
            )
    return tables


def build_tables() -> dict[str, list[dict[str, str]]]:
    subjects = make_subjects()
    tables: dict[str, list[dict[str, str]]] = {name: [] for name in COLUMNS}
    for subject, donor_id in zip(subjects, donor_ids(subjects), strict=True):
        for name, rows in subject_tables(subject, donor_id).items():
            tables[name] += rows
    tables[ADVERSE_EVENTS_FILE] = adverse_event_rows(tables)
    tables |= screening_tables(tables)
    return tables


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "nct00698191",
        help="output directory (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "trial.txt").write_text(f"{NCT_ID}\n", encoding="utf-8")
    for name, rows in build_tables().items():
        count = write_csv(out / name, COLUMNS[name], rows)
        print(f"{out / name}: {count} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
