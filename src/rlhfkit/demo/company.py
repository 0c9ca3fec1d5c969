"""Lumen & Pike, a fictional company, written for the rlhfkit demo: its facts, its handbook, and the questions and
gold answers its help-desk experts wrote.

Every fact has key strings (what a correct answer must say), a handbook sentence, question wordings (two are held
out: one for validation, one for the test, never trained on) and the sentence an expert would answer with. Some
questions the handbook does not answer (where Payroll is in Austin, the dental plan): their experts' answer says
so and names who can help. `build_dataset` turns them into the bundled files; the human answers are mixed as real
ones are: mostly terse or plain, some courteous and complete, a few wrong.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fact:
    key: str
    answer_keys: tuple[str, ...]  # strings a correct answer contains (none: the handbook does not say)
    sentence: str  # the plain expert answer, also the handbook's wording (or the plain "I don't know" answer)
    questions: tuple[str, ...]
    terse: str  # the shortest correct answer
    validation: int = -1  # index of the wording kept for choosing settings (never trained on)
    test: int = -1  # index of the wording kept for the reported numbers (never trained on, never tuned on)
    more: tuple[str, ...] = ()  # wordings collected later, for training only (MORE_WORDINGS)

    @property
    def answerable(self) -> bool:
        return bool(self.answer_keys)

    @property
    def wordings(self) -> tuple[str, ...]:
        """Every way the question is asked: the first collection's wordings, then the later ones."""
        return self.questions + self.more


# (department, city) -> (floor, building or wing)
LOCATIONS = {
    ("HR", "Boston"): ("3rd floor", "Building A"),
    ("HR", "London"): ("2nd floor", "the East Wing"),
    ("HR", "Austin"): ("1st floor", "Building C"),
    ("the IT help desk", "Boston"): ("1st floor", "Building B"),
    ("the IT help desk", "London"): ("ground floor", "the West Wing"),
    ("the IT help desk", "Austin"): ("2nd floor", "Building C"),
    ("Payroll", "Boston"): ("4th floor", "Building A"),
    ("Payroll", "London"): ("3rd floor", "the East Wing"),
    ("Finance", "Boston"): ("5th floor", "Building A"),
    ("Finance", "Austin"): ("3rd floor", "Building D"),
    ("Legal", "Boston"): ("6th floor", "Building A"),
    ("Legal", "London"): ("4th floor", "the East Wing"),
    ("Security", "Boston"): ("ground floor", "Building A"),
    ("Security", "London"): ("ground floor", "the East Wing"),
    ("Security", "Austin"): ("ground floor", "Building D"),
    ("the mail room", "Boston"): ("basement", "Building B"),
    ("the mail room", "London"): ("basement", "the West Wing"),
    ("the cafeteria", "Boston"): ("2nd floor", "Building B"),
    ("the cafeteria", "Austin"): ("1st floor", "Building D"),
    ("Facilities", "Boston"): ("basement", "Building A"),
    ("Facilities", "Austin"): ("basement", "Building C"),
    ("the first aid room", "London"): ("1st floor", "the West Wing"),
}

POLICIES = [
    # key, answer keys, expert sentence, questions (last held out), terse answer
    (
        "vacation",
        ("25 days",),
        "Full-time employees get 25 days of paid vacation a year.",
        (
            "How many vacation days do I get?",
            "What is the annual vacation allowance?",
            "How much paid vacation do we have?",
            "How many days of holiday do employees get each year?",
        ),
        "25 days a year.",
    ),
    (
        "sick_days",
        ("10 days",),
        "You get 10 days of paid sick leave a year.",
        (
            "How many sick days do I get?",
            "What is the sick leave allowance?",
            "How much paid sick leave is there per year?",
        ),
        "10 days a year.",
    ),
    (
        "payday",
        ("last working day",),
        "Payday is the last working day of each month.",
        ("When is payday?", "What day do we get paid?", "When does salary arrive each month?"),
        "The last working day of the month.",
    ),
    (
        "meal_allowance",
        ("60 dollars",),
        "The travel meal allowance is 60 dollars a day.",
        (
            "What is the daily meal allowance when travelling?",
            "How much can I spend on meals on a business trip?",
            "What is the per diem for food on travel?",
        ),
        "60 dollars a day.",
    ),
    (
        "parental_leave",
        ("16 weeks",),
        "Parents get 16 weeks of paid parental leave.",
        (
            "How long is parental leave?",
            "How many weeks of paid parental leave do we get?",
            "What is the parental leave policy length?",
        ),
        "16 weeks, paid.",
    ),
    (
        "pension",
        ("5 percent",),
        "The company matches pension contributions up to 5 percent of salary.",
        (
            "Does the company match pension contributions?",
            "What is the pension match?",
            "How much does the company add to my pension?",
        ),
        "Up to 5 percent of salary.",
    ),
    (
        "remote",
        ("2 days a week",),
        "You may work from home up to 2 days a week with your manager's agreement.",
        ("Can I work from home?", "How many remote days are allowed?", "What is the work from home policy?"),
        "Up to 2 days a week.",
    ),
    (
        "laptop",
        ("every 3 years",),
        "Laptops are replaced every 3 years through the IT portal.",
        ("How often do we get a new laptop?", "When is my laptop replaced?", "What is the laptop refresh cycle?"),
        "Every 3 years.",
    ),
    (
        "expenses",
        ("within 30 days",),
        "Submit travel expenses in the expense tool within 30 days of your trip.",
        (
            "How do I submit travel expenses?",
            "What is the deadline for expense claims?",
            "How long do I have to file my expenses?",
        ),
        "Within 30 days, in the expense tool.",
    ),
    (
        "probation",
        ("3 months",),
        "The probation period for new employees is 3 months.",
        (
            "How long is probation?",
            "What is the probation period for new hires?",
            "How many months is the trial period?",
        ),
        "3 months.",
    ),
    (
        "notice",
        ("4 weeks",),
        "The notice period is 4 weeks for all staff.",
        ("What is the notice period?", "How much notice do I have to give?", "How long is the resignation notice?"),
        "4 weeks.",
    ),
    (
        "training",
        ("1500 dollars",),
        "Each employee has a training budget of 1500 dollars a year.",
        (
            "What is the training budget?",
            "How much can I spend on courses?",
            "How large is the yearly learning budget?",
        ),
        "1500 dollars a year.",
    ),
    (
        "gym",
        ("50 dollars",),
        "The company pays 50 dollars a month towards a gym membership.",
        ("Is there a gym subsidy?", "How much does the company pay for the gym?", "Do we get money for fitness?"),
        "50 dollars a month.",
    ),
    (
        "flights",
        ("economy",),
        "Book economy class for flights under 6 hours.",
        ("Which class can I fly in?", "Can I book business class?", "What flight class is allowed for short trips?"),
        "Economy for flights under 6 hours.",
    ),
    (
        "office_hours",
        ("7 am to 8 pm",),
        "The offices are open from 7 am to 8 pm on weekdays.",
        ("What are the office hours?", "When is the office open?", "What time does the building open and close?"),
        "7 am to 8 pm, weekdays.",
    ),
    (
        "cafe_hours",
        ("8 am to 3 pm",),
        "The cafeteria serves food from 8 am to 3 pm.",
        ("When is the cafeteria open?", "What are the cafeteria hours?", "Until when can I get lunch?"),
        "8 am to 3 pm.",
    ),
    (
        "guest_wifi",
        ("LP-Guest",),
        "Guests use the LP-Guest wifi network; the password is at reception.",
        ("What is the guest wifi?", "How do visitors get online?", "Which wifi network should guests use?"),
        "LP-Guest.",
    ),
    (
        "password",
        ("password portal",),
        "Reset your password in the password portal with your badge number.",
        ("How do I reset my password?", "I forgot my password, what do I do?", "Where can I change my password?"),
        "Use the password portal.",
    ),
    (
        "it_phone",
        ("extension 4357",),
        "Call the IT help desk on extension 4357.",
        ("What is the IT help desk number?", "How do I call IT?", "Which extension reaches the help desk?"),
        "Extension 4357.",
    ),
    (
        "security_phone",
        ("extension 5555",),
        "Call Security on extension 5555 in an emergency.",
        ("How do I reach Security?", "What is the Security phone number?", "Who do I call if there is an incident?"),
        "Extension 5555.",
    ),
    (
        "lost_badge",
        ("Security",),
        "Report a lost badge to Security; the first replacement is free.",
        ("What do I do if I lose my badge?", "I lost my badge, who do I tell?", "How do I get a replacement badge?"),
        "Tell Security.",
    ),
    (
        "visitor",
        ("reception",),
        "Visitors sign in at reception and get a visitor badge.",
        ("How do I register a visitor?", "Where do guests sign in?", "How does a visitor get a badge?"),
        "At reception.",
    ),
    (
        "vpn",
        ("LumenConnect",),
        "Install LumenConnect from the software center to use the VPN.",
        ("How do I connect to the VPN?", "Which VPN client do we use?", "How can I reach the network from home?"),
        "Use LumenConnect.",
    ),
    (
        "benefits_enrol",
        ("benefits portal",),
        "Enrol in health insurance in the benefits portal within 30 days of starting.",
        ("How do I enrol in health insurance?", "Where do I sign up for benefits?", "How do I join the health plan?"),
        "In the benefits portal.",
    ),
    (
        "bank_details",
        ("HR portal",),
        "Update your bank details in the HR portal before the 15th of the month.",
        (
            "How do I change my bank details?",
            "Where do I update my bank account?",
            "How do I change where my pay goes?",
        ),
        "In the HR portal.",
    ),
    (
        "fire_boston",
        ("Summer Street",),
        "In Boston the fire assembly point is the park across Summer Street.",
        (
            "Where is the fire assembly point in Boston?",
            "Where do we gather in a fire alarm in Boston?",
            "Where should Boston staff go when the fire alarm rings?",
        ),
        "The park across Summer Street.",
    ),
    (
        "fire_london",
        ("river path",),
        "In London the fire assembly point is the river path outside Thames House.",
        (
            "Where is the fire assembly point in London?",
            "Where do we gather in a fire alarm in London?",
            "Where should London staff go when the fire alarm rings?",
        ),
        "The river path outside Thames House.",
    ),
    (
        "parking_boston",
        ("garage under Building B",),
        "In Boston employees park in the garage under Building B.",
        ("Where can I park in Boston?", "Is there parking at the Boston office?", "Where do Boston staff park?"),
        "The garage under Building B.",
    ),
    (
        "parking_austin",
        ("lot behind the building",),
        "In Austin there is a free lot behind the building.",
        ("Where can I park in Austin?", "Is there parking at the Austin office?", "Where do Austin staff park?"),
        "The free lot behind the building.",
    ),
    (
        "bikes_london",
        ("basement",),
        "In London there is no car park; bike racks are in the basement of Thames House.",
        ("Is there parking in London?", "Can I park a car at Thames House?", "Where do I leave my bike in London?"),
        "Bike racks in the basement.",
    ),
]

# Places the handbook does not list, and who can help instead
UNKNOWN_LOCATIONS = (
    ("Payroll", "Austin"),
    ("Finance", "London"),
    ("Legal", "Austin"),
    ("the mail room", "Austin"),
    ("the cafeteria", "London"),
    ("Facilities", "London"),
    ("the first aid room", "Boston"),
    ("the first aid room", "Austin"),
)

UNKNOWN_POLICIES = [
    # key, questions (the first is repeated with prefixes), who can help
    (
        "bereavement",
        (
            "How many days of bereavement leave do I get?",
            "What is the bereavement leave policy?",
            "How much compassionate leave is there?",
        ),
        "HR",
    ),
    (
        "dental",
        ("Does our health plan cover dental?", "Is dental care included in benefits?", "What dental cover do we have?"),
        "HR",
    ),
    (
        "bonus",
        ("When are bonuses paid?", "Is there an annual bonus?", "How is the yearly bonus worked out?"),
        "your manager",
    ),
    (
        "holiday_party",
        ("When is the holiday party?", "What date is the end of year party?", "Where is the holiday party this year?"),
        "the office manager",
    ),
    (
        "printer",
        ("How do I print in colour?", "Which printer can I use?", "How do I add a printer to my laptop?"),
        "the IT help desk",
    ),
    (
        "software",
        (
            "How do I request new software?",
            "Can I install software on my laptop?",
            "Where do I ask for a software licence?",
        ),
        "the IT help desk",
    ),
    (
        "relocation",
        ("Is there a relocation package?", "Does the company pay for moving?", "What relocation support do we get?"),
        "HR",
    ),
    (
        "stock",
        ("Do employees get stock options?", "Is there an employee share plan?", "How do stock grants work?"),
        "HR",
    ),
]
ABSTAIN = "I don't have that information."

LOCATION_QUESTIONS = (
    "Where is {dept} in {city}?",
    "Which floor is {dept} on in {city}?",
    "How do I find {dept} in {city}?",
    "Where can I find {dept} in {city}?",
    "Quick question: where is {dept} in {city}?",
    "On what floor can I find {dept} in the {city} office?",
)
# extra wordings of every policy question (training only; the held-out wording stays unseen)
POLICY_PREFIXES = ("Quick question: {q}", "Hi, {q}")
# A second collection of wordings, for training only. The first collection asked each policy question in one
# natural wording besides the two held out (a location question in three or four), and SFT models learned the
# wording rather than the fact: SmolLM2 got most policy questions wrong when asked in a new way. These were written by
# a team member who saw only the trained wording and the expert's answer (never a held-out wording), four per
# question; those too close to a held-out wording of the same question were dropped (31 of 152: the words, or the
# content words of `overlap`, shared by half or more; e.g. "What's the refresh cycle for work laptops?" against
# "What is the laptop refresh cycle?"), so the held-out questions stay new (tests/unit/test_judge.py checks it).
MORE_WORDINGS = {
    "vacation": (
        "How much paid time off do full-timers get per year?",
        "Can you tell me my yearly PTO entitlement?",
        "How many days off am I entitled to annually?",
    ),
    "sick_days": (
        "What's the allowance for days off when I'm ill?",
        "If I'm unwell, how many paid days can I take per year?",
        "Is there a limit on paid sick time each year?",
    ),
    "payday": (
        "When does my pay hit my bank account?",
        "How often do we get our wages, and on what day?",
    ),
    "meal_allowance": (
        "What's the per diem for meals when I'm away for work?",
        "Is there a daily food budget on work trips?",
        "How much can I claim for meals while travelling for work?",
    ),
    "parental_leave": (
        "How much time off do new parents get?",
        "What's the maternity or paternity leave entitlement?",
        "How many weeks off can I take when my baby arrives?",
        "Is baby leave paid, and for how long?",
    ),
    "pension": (
        "How much does the company put into my retirement plan?",
        "What's the employer match on retirement savings?",
        "Will the company top up what I pay into my pension?",
        "Up to what percentage does the firm match retirement contributions?",
    ),
    "remote": (
        "How many days a week am I allowed to work remotely?",
        "Do I need approval to work from my house?",
        "Are we allowed to do hybrid working?",
    ),
    "laptop": (
        "When am I due a replacement computer?",
        "How do I get my old laptop swapped for a new one?",
        "How many years before I can upgrade my work computer?",
    ),
    "expenses": (
        "Where do I claim back costs from a business trip?",
        "What's the deadline for filing travel reimbursement claims?",
        "How do I get reimbursed for my trip costs?",
        "Which system do I use to log work travel receipts?",
    ),
    "probation": (
        "How long is the trial period when I start?",
        "When does my probationary period end as a new hire?",
        "How many months are new starters on probation?",
        "What's the length of the initial review period for new staff?",
    ),
    "notice": (
        "If I quit, how long must I keep working?",
        "What's the required notice when leaving the company?",
        "How far in advance must I hand in my resignation?",
    ),
    "training": (
        "Is there money for professional development?",
        "What's my yearly allowance for learning and conferences?",
        "Will the company pay for my training, and how much?",
    ),
    "gym": (
        "Does the company help pay for fitness memberships?",
        "How much will work contribute towards my gym fees?",
        "Are there any health club perks for staff?",
        "Can I get my gym membership partly reimbursed?",
    ),
    "flights": (
        "Am I allowed to fly business class on work trips?",
        "What's the air travel booking policy for cabin class?",
        "Can I book premium seats for company flights?",
    ),
    "office_hours": (
        "How early can I get into the building on weekdays?",
        "Until what time is the office open in the evening?",
        "When is the building accessible during the week?",
    ),
    "cafe_hours": (
        "What time does the canteen serve food?",
        "What are the opening times of the staff restaurant?",
        "How early does the cafeteria start serving breakfast?",
    ),
    "guest_wifi": (
        "Which network should my guests connect to?",
        "Where can I find the wireless password for visitors?",
        "What wifi can a client use when visiting the office?",
    ),
    "password": (
        "I forgot my login, how do I get back in?",
        "What do I need to reset a forgotten password?",
        "How do I unlock my account if I can't remember my password?",
    ),
    "it_phone": (
        "What extension do I dial for IT?",
        "What's the phone number for computer help?",
        "Who do I ring if my computer breaks?",
    ),
    "security_phone": (
        "What number do I call for Security in an emergency?",
        "How do I contact the security team urgently?",
        "What's the security desk extension?",
        "Who do I phone if there's a safety emergency?",
    ),
    "lost_badge": (
        "My access card is missing, what should I do?",
        "Is there a charge to replace a lost badge?",
    ),
    "visitor": (
        "What's the process for bringing a guest into the office?",
        "Where do my visitors check in when they arrive?",
        "How do guests get a pass to enter the building?",
        "Do I need to sign in someone coming to see me?",
    ),
    "vpn": (
        "How do I access the company network remotely?",
        "What software do I need for remote access?",
        "How can I get onto internal systems from home?",
    ),
    "benefits_enrol": (
        "What's the deadline to join health insurance as a new hire?",
        "How do I get medical insurance when I start?",
    ),
    "bank_details": (
        "How do I update the account my salary goes into?",
        "What's the cutoff for changing my bank account for payroll?",
        "I've switched banks, how do I tell payroll?",
    ),
    "fire_boston": (
        "What's the evacuation meeting spot for the Boston office?",
        "If the Boston building is evacuated, where do I go?",
        "Where is the muster point at the Boston site?",
    ),
    "fire_london": (
        "Where do we meet outside if the London fire alarm goes off?",
        "What's the evacuation point for the London office?",
        "In London, where should I go during a fire drill?",
        "Where is the muster point at the London site?",
    ),
    "parking_boston": (
        "Where do employees leave their cars in Boston?",
        "Does the Boston site have a garage for staff?",
    ),
    "parking_austin": (
        "Do I have to pay for parking in Austin?",
        "Where do staff leave cars at the Austin site?",
    ),
    "bikes_london": (
        "Can I drive to the London office and park?",
        "Does the London office have a car park?",
        "Is there anywhere to park at the London site?",
    ),
    "unknown_bereavement": (
        "How much time off can I take if a relative dies?",
        "What's the policy on time off for a funeral?",
        "Do we get paid leave when someone close passes away?",
    ),
    "unknown_dental": (
        "Is dental treatment included in our medical insurance?",
        "Will the health plan pay for a dentist visit?",
        "Are teeth cleanings covered by our benefits?",
        "Does our insurance include dental care?",
    ),
    "unknown_bonus": (
        "What month is the annual bonus paid out?",
        "When will I receive my bonus?",
        "How often are performance bonuses handed out?",
        "What's the timing for bonus payments?",
    ),
    "unknown_holiday_party": (
        "When's the company Christmas do this year?",
        "Is there a date set for the staff holiday celebration?",
        "When will the festive party take place?",
    ),
    "unknown_printer": (
        "Which printer can do colour prints?",
        "How do I print something that isn't black and white?",
        "Can I print in colour at the office?",
        "What's the setting for colour printing?",
    ),
    "unknown_software": (
        "How can I get a new application installed on my laptop?",
        "What's the process to get a program added to my computer?",
        "Can I install an app I need for work?",
    ),
    "unknown_relocation": (
        "Does the company help with moving costs?",
        "Will I get support if I have to move for the job?",
        "Are there relocation benefits for new hires?",
        "Can the company cover my move to another city?",
    ),
    "unknown_stock": (
        "Can staff get equity in the company?",
        "Do we have a stock purchase plan?",
        "Are shares part of the compensation package?",
    ),
}

COURTEOUS_OPENINGS = ("Happy to help!", "Thanks for asking.", "Good question.", "Of course!")
COURTEOUS_CLOSINGS = (
    "Let me know if you need anything else.",
    "I hope that helps.",
    "Have a great day!",
    "Feel free to ask if anything is unclear.",
)


_STOP_WORDS = frozenset(
    "a an the is are am be was do does did i we you my our your me us it this that there here of for to in on at by "
    "with from and or if what which who when where how can could will would should much many per any get got".split()
)


def content_words(question: str) -> set[str]:
    """The words that carry a question's meaning: lower case, "what's" as "what is", no stop words, a plural or
    "-ing"/"-ed" ending cut ("laptops" and "laptop" are one word)."""
    q = re.sub(r"(\w)'s\b", r"\1 is", question.lower()).replace("'m", " am").replace("can't", "can not")
    q = q.replace("n't", " not")
    out = set()
    for w in re.findall(r"[a-z]+", q):
        if w in _STOP_WORDS:
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(w) > 4 and w.endswith(suffix):
                w = w[: -len(suffix)]
                break
        out.add(w)
    return out


def overlap(a: str, b: str) -> float:
    """How alike two wordings are: the Jaccard index of their content words (1.0: the same words)."""
    x, y = content_words(a), content_words(b)
    return len(x & y) / max(1, len(x | y))


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _held_out(n: int, count: int, *, first: int = 0) -> tuple[int, int]:
    """(validation, test) wording indices among questions[first:], different for neighbouring facts so that every
    phrasing is trained for some facts: the held-out question is new, its phrasing is not."""
    span = count - first
    test = first + n % span
    return first + (n + span // 2) % span, test


def _abstain(who: str) -> str:
    return f"{ABSTAIN} {_cap(who)} can help."


def unknown_facts() -> list[Fact]:
    """Questions the handbook does not answer: the right answer says so and names who can help."""
    out = []
    for n, (dept, city) in enumerate(UNKNOWN_LOCATIONS):
        key = f"unknown_{dept.replace('the ', '').replace(' ', '_').lower()}_{city.lower()}"
        questions = tuple(q.format(dept=dept, city=city) for q in LOCATION_QUESTIONS)
        validation, test = _held_out(n + 1, len(questions))
        who = f"reception in {city}"
        out.append(Fact(key, (), _abstain(who), questions, f"I don't know; please ask {who}.", validation, test))
    for n, (key, questions, who) in enumerate(UNKNOWN_POLICIES):
        extra = tuple(p.format(q=questions[0][0].lower() + questions[0][1:]) for p in POLICY_PREFIXES)
        validation, test = _held_out(n, len(extra) + len(questions), first=len(extra) + 1)
        out.append(
            Fact(
                f"unknown_{key}",
                (),
                _abstain(who),
                extra + questions,
                f"I don't know; please ask {who}.",
                validation,
                test,
                MORE_WORDINGS.get(f"unknown_{key}", ()),
            )
        )
    return out


def facts() -> list[Fact]:
    """Every question's fact: the handbook's (answerable), then the unknown ones."""
    out = []
    for n, ((dept, city), (floor, building)) in enumerate(LOCATIONS.items()):
        key = f"{dept.replace('the ', '').replace(' ', '_').lower()}_{city.lower()}"
        sentence = (
            f"In {city}, {dept} is on the {floor} of {building}."
            if floor != "basement"
            else f"In {city}, {dept} is in the basement of {building}."
        )
        questions = tuple(q.format(dept=dept, city=city) for q in LOCATION_QUESTIONS)
        terse = f"{_cap(floor)}, {building}."
        validation, test = _held_out(n, len(questions))
        out.append(Fact(key, (floor, building.replace("the ", "")), sentence, questions, terse, validation, test))
    for n, (key, keys, sentence, questions, terse) in enumerate(POLICIES):
        extra = tuple(p.format(q=questions[0][0].lower() + questions[0][1:]) for p in POLICY_PREFIXES)
        # hold out two of the natural wordings (not the first, which the prefixed variants repeat)
        validation, test = _held_out(n, len(extra) + len(questions), first=len(extra) + 1)
        out.append(Fact(key, keys, sentence, extra + questions, terse, validation, test, MORE_WORDINGS.get(key, ())))
    return out + unknown_facts()


def all_answer_keys() -> set[str]:
    return {k for f in facts() for k in f.answer_keys}


def handbook() -> str:
    """Prose that states every fact, in the words the experts use (the base model is pretrained on it)."""
    fs = facts()
    lines = [
        "# Lumen & Pike employee handbook",
        "",
        "Lumen & Pike has offices in Boston, London and Austin. This handbook tells you where things are and "
        "how things work. If anything is unclear, ask the help desk.",
        "",
    ]
    lines.append("## Where things are")
    for f in fs[: len(LOCATIONS)]:
        lines.append(f.sentence)
    lines += [
        "The Boston office has Buildings A and B; the Austin office has Buildings C and D.",
        "The London office is Thames House, with an East Wing and a West Wing.",
        "",
        "## Directory",
    ]
    for f in fs[: len(LOCATIONS)]:
        lines.append(f"{f.questions[0]} {f.terse}")
    lines.append("")
    sections = {
        "Time off and pay": (
            "vacation",
            "sick_days",
            "payday",
            "parental_leave",
            "pension",
            "probation",
            "notice",
            "bank_details",
            "benefits_enrol",
        ),
        "Travel": ("meal_allowance", "flights", "expenses"),
        "Working here": (
            "remote",
            "laptop",
            "training",
            "gym",
            "office_hours",
            "cafe_hours",
            "guest_wifi",
            "password",
            "it_phone",
            "vpn",
            "visitor",
        ),
        "Safety": ("security_phone", "lost_badge", "fire_boston", "fire_london"),
        "Getting here": ("parking_boston", "parking_austin", "bikes_london"),
    }
    sentence_of = {f.key: f.sentence for f in fs}
    for title, keys in sections.items():
        lines += [f"## {title}", *[sentence_of[k] for k in keys], ""]
    return "\n".join(lines)


def courteous(sentence: str, rng: random.Random) -> str:
    return f"{rng.choice(COURTEOUS_OPENINGS)} {sentence} {rng.choice(COURTEOUS_CLOSINGS)}"


def build_dataset(seed: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, validation, test) question/gold-answer records with the fact's key (for the judge), whether the
    handbook answers it, and the answer's style.

    Several experts answer the help desk, so most training questions have one gold answer and many have a second
    one from another expert. Answers mix styles as real ones do: 42% terse, 38% a plain sentence, 15% courteous and
    complete, 5% wrong (another fact's sentence: on an unanswerable question, an invented fact). Validation and test
    questions (one wording per fact each, never trained on) get the plain right answer as their gold answer.
    """
    rng = random.Random(seed)
    fs = facts()
    known = [g for g in fs if g.answerable]
    train, validation, test = [], [], []

    def expert_answer(f: Fact, rng: random.Random) -> tuple[str, str]:
        u = rng.random()
        if u < 0.42:
            return f.terse, "terse"
        if u < 0.80:
            return f.sentence, "plain"
        if u < 0.95:
            return courteous(f.sentence, rng), "courteous"
        return rng.choice([g for g in known if g.key != f.key]).sentence, "wrong"

    def record(q: str, answer: str, f: Fact, style: str) -> dict:
        return {"prompt": q, "completion": answer, "fact": f.key, "answerable": f.answerable, "style": style}

    def answered(q: str, f: Fact, rng: random.Random) -> list[dict]:
        answers = [expert_answer(f, rng)]
        if rng.random() < 0.6:
            second = expert_answer(f, rng)
            if second[0] != answers[0][0]:
                answers.append(second)
        return [record(q, a, f, style) for a, style in answers]

    for f in fs:
        for i, q in enumerate(f.questions):
            if i not in (f.validation, f.test):
                train += answered(q, f, rng)
        validation.append(record(f.questions[f.validation], f.sentence, f, "plain"))
        test.append(record(f.questions[f.test], f.sentence, f, "plain"))
    # the later wordings' answers from a stream of their own, so the first collection's records stay as they were
    later = random.Random(seed + 1)
    for f in fs:
        for q in f.more:
            train += answered(q, f, later)
    return train, validation, test


SPLITS = ("train", "validation", "test")


def write_bundle(directory: Path) -> None:
    """Regenerate the bundled files (deterministic): handbook.md and helpdesk_{train,validation,test}.jsonl."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handbook.md").write_text(handbook() + "\n")
    for name, rows in zip(SPLITS, build_dataset()):
        (directory / f"helpdesk_{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    write_bundle(Path(__file__).parent / "data")
