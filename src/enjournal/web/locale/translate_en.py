"""English for the doors' bokmål message ids, merged into ``en/LC_MESSAGES/messages.po`` by
``python src/enjournal/web/locale/translate_en.py /tmp/messages.pot`` (docs/portal.md
"Translations"). Strings missing here keep any translation the catalog already has."""
from __future__ import annotations

import sys
from pathlib import Path

EN = {
    "Skjemaet kunne ikke sendes": "The form could not be sent",
    "Skjemaet var utløpt eller kom ikke fra denne siden. Ingenting ble lagret. Gå tilbake, last inn siden på nytt og prøv igjen.":
        "The form had expired or did not come from this page. Nothing was saved. Go back, reload the page and try again.",
    "Ingen tilgang": "No access", "Fant ikke siden": "Page not found", "Slettet": "Deleted",
    "Noe gikk galt": "Something went wrong",
    "Noe gikk galt hos oss. Ingenting ble lagret. Prøv igjen om litt.":
        "Something went wrong on our side. Nothing was saved. Please try again in a little while.",
    "Innloggingen er ikke tilgjengelig": "Login is not available",
    "Innloggingen mislyktes. Prøv å logge inn på nytt.": "The login failed. Please log in again.",
    "Denne inngangen er for innbyggere. Helsepersonell logger inn på /helsepersonell/.":
        "This entrance is for citizens. Health personnel log in at /helsepersonell/.",
    "Denne inngangen er for helsepersonell. Innbyggere logger inn på /innbygger/.":
        "This entrance is for health personnel. Citizens log in at /innbygger/.",
    "Feil inngang": "Wrong entrance",
    "Utloggingen kom ikke fra denne siden. Bruk knappen «Logg ut».":
        "The logout did not come from this page. Use the “Log out” button.",
    "Skjemaet var utløpt. Last inn siden på nytt og prøv igjen.": "The form had expired. Reload the page and try again.",
    "Oversikt": "Overview", "Kjernejournal": "Summary care record", "Kritisk informasjon": "Critical information",
    "Egne registreringer": "My own entries", "Donorkort": "Donor card", "Personverninnstillinger": "Privacy settings",
    "Logg over bruk": "Access log", "Representasjon": "Representation",
    "lest": "read", "registrert": "registered", "endret": "changed", "slettet": "deleted", "søkt/hentet": "searched/fetched",
    "Behandlingsrelasjon": "Care relationship", "Akuttilgang (øyeblikkelig hjelp)": "Emergency access (urgent care)",
    "Koordinering": "Coordination of care", "Akuttilgang (nødrett)": "Emergency access (break the glass)",
    "Forelder": "Parent", "Fullmakt": "Power of attorney",
    "lege": "doctor", "sykepleier": "nurse", "farmasøyt": "pharmacist", "reseptar": "prescriptionist",
    "jordmor": "midwife", "helsefagarbeider": "health worker",
    "Sammendraget helsepersonell ser når du trenger hjelp.": "The summary health personnel see when you need help.",
    "Alvorlige allergier, implantater og annet som er viktig å vite.":
        "Serious allergies, implants and other things that are important to know.",
    "Pårørende, sykdommer med egne ord, behov og tolk.": "Next of kin, illnesses in your own words, needs and interpreter.",
    "Ta stilling til organdonasjon.": "Make up your mind about organ donation.",
    "Sperr helsepersonell, skjerm opplysninger eller reserver deg.":
        "Block health personnel, restrict information or opt out.",
    "Se hvem som har sett i journalen din.": "See who has looked at your record.",
    "Bruk Helsenorge på vegne av barn eller noen som har gitt deg fullmakt.":
        "Use Helsenorge on behalf of children or someone who has given you power of attorney.",
    "Skriv navnet.": "Enter the name.",
    "Skriv hvilken relasjon personen har til deg, for eksempel datter.":
        "Enter how the person is related to you, for example daughter.",
    "Skriv et telefonnummer med minst 8 sifre, for eksempel +47 912 34 567.":
        "Enter a phone number with at least 8 digits, for example +47 912 34 567.",
    "Skriv en kort beskrivelse (høyst 500 tegn).": "Enter a short description (at most 500 characters).",
    "Skriv høyst 500 tegn.": "Enter at most 500 characters.",
    "Skriv hvilket språk du trenger tolk på.": "Enter the language you need an interpreter for.",
    "Velg om du vil være organdonor.": "Choose whether you want to be an organ donor.",
    "Oppgi én eller to personer over 18 år som kjenner ønsket ditt.":
        "Name one or two people over 18 who know your wish.",
    "Skriv navnet på personen som kjenner ønsket ditt.": "Enter the name of the person who knows your wish.",
    "Skriv fødselsdatoen som dd.mm.åååå. Personen må være minst 18 år.":
        "Enter the date of birth as dd.mm.yyyy. The person must be at least 18.",
    "Skriv navnet på den andre personen, eller la alle feltene for person 2 stå tomme.":
        "Enter the name of the second person, or leave all fields for person 2 empty.",
    "Kontaktpersonen er lagret.": "The contact has been saved.", "Kontaktpersonen er fjernet.": "The contact has been removed.",
    "Sykdommen er lagret.": "The illness has been saved.", "Sykdommen er fjernet.": "The illness has been removed.",
    "Behovene dine er lagret.": "Your needs have been saved.", "Tolkebehovet er lagret.": "Your interpreter need has been saved.",
    "Donorkortet er lagret.": "The donor card has been saved.",
    "Donorkortet er trukket tilbake.": "The donor card has been withdrawn.",
    "Kjernejournal (kritisk informasjon og sammendrag)": "Summary care record (critical information and summary)",
    "Resepter og legemidler": "Prescriptions and medicines", "Journaldokumenter": "Record documents",
    "Prøvesvar": "Test results", "Øvrige journalopplysninger": "Other record information",
    "Sperret helsepersonell": "Blocked health personnel", "Skjermede opplysninger": "Restricted information",
    "Reservert mot kjernejournal": "Opted out of the summary care record",
    "Helsepersonellet er sperret.": "The health person has been blocked.",
    "Opplysningene er skjermet.": "The information has been restricted.",
    "Du er reservert mot kjernejournal.": "You have opted out of the summary care record.",
    "Innstillingen er trukket tilbake.": "The setting has been withdrawn.",
    "Du kan ikke endre personverninnstillingene for denne personen.":
        "You cannot change the privacy settings of this person.",
    "Skriv HPR-nummeret med 4 til 9 sifre, for eksempel 9144101.":
        "Enter the HPR number with 4 to 9 digits, for example 9144101.",
    "Fant ikke helsepersonell med HPR-nummer %(hpr)s.": "No health person has HPR number %(hpr)s.",
    "Velg minst én type opplysninger du vil skjerme.": "Choose at least one kind of information to restrict.",
    "Kryss av for at du vil reservere deg mot kjernejournal.": "Tick the box to opt out of the summary care record.",
    "Innstillingen finnes ikke lenger.": "The setting no longer exists.",
    "Du kan ikke representere denne personen.": "You cannot represent this person.",
    "Hopp til hovedinnhold": "Skip to main content", "Logg ut": "Log out", "Hovedmeny": "Main menu",
    "Én innbygger – én journal": "One citizen – one record", "Til forsiden": "To the front page",
    "For å gå videre må du rette opp følgende:": "To continue, please correct the following:",
    "Du er logget ut": "You are logged out", "Logg inn": "Log in",
    "Du er nå logget ut. Lukk nettleseren hvis du bruker en delt datamaskin.":
        "You are now logged out. Close the browser if you use a shared computer.",
    "Du kan ikke se loggen for denne personen.": "You cannot see the log of this person.",
    "Her ser du hvem som har brukt journalen: helsepersonell og de som handler på vegne av deg. Akuttilganger er markert.":
        "Here you see who has used the record: health personnel and those who act on your behalf. Emergency accesses are marked.",
    "Ingen har brukt journalen din ennå.": "Nobody has used your record yet.", "Nyeste først": "Newest first",
    "Når": "When", "Hvem": "Who", "Virksomhet": "Organisation", "Grunnlag": "Basis", "Hva": "What",
    "Akuttilgang": "Emergency access", "samtykke erklært": "consent declared", "Avvist": "Refused",
    "Eldre oppføringer": "Older entries", "Kritisk informasjon kan ikke vises.": "Critical information cannot be shown.",
    "Foreldre ser ikke kjernejournalen til barn mellom 12 og 15 år.":
        "Parents do not see the summary care record of children aged 12 to 15.",
    "Det er ikke registrert kritisk informasjon.": "No critical information is registered.",
    "Registrert av leger og sykepleiere": "Registered by doctors and nurses", "Kategori": "Category",
    "Beskrivelse": "Description", "Sikkerhet": "Certainty", "Registrert": "Registered", "Sist bekreftet": "Last confirmed",
    "Kritisk": "Critical", "Du har sagt ja til organdonasjon.": "You have said yes to organ donation.",
    "Du har sagt nei til organdonasjon.": "You have said no to organ donation.", "Registrert %(when)s.": "Registered %(when)s.",
    "Kjenner ønsket ditt:": "Knows your wish:", "Trekk tilbake donorkortet": "Withdraw the donor card",
    "Du har trukket tilbake donorkortet ditt.": "You have withdrawn your donor card.",
    "Du har ikke registrert et donorkort.": "You have not registered a donor card.", "Endre donorkortet": "Change the donor card",
    "Registrer donorkort": "Register a donor card", "Vil du være organdonor?": "Do you want to be an organ donor?",
    "Ja, jeg vil donere organene mine etter min død": "Yes, I want to donate my organs after my death", "Nei": "No",
    "Person 1 som kjenner ønsket ditt (over 18 år)": "Person 1 who knows your wish (over 18)", "Navn": "Name",
    "Telefonnummer": "Phone number", "Fødselsdato": "Date of birth", "dd.mm.åååå": "dd.mm.yyyy",
    "Person 2 (valgfritt)": "Person 2 (optional)", "Lagre donorkort": "Save donor card",
    "Du ser journalen til %(name)s": "You are viewing the record of %(name)s",
    "på vegne av, med fullmakt": "on their behalf, with power of attorney",
    "som forelder, begrenset innsyn for barn 12–15 år": "as a parent, limited access for children aged 12–15",
    "som forelder": "as a parent", "Tilbake til meg selv": "Back to myself", "Ingen journal": "No record",
    "Vi fant ingen journal for deg her.": "We found no record for you here.", "Oversikt for %(name)s": "Overview for %(name)s",
    "Hei, %(name)s": "Hello, %(name)s",
    "Det du registrerer her, blir en del av kjernejournalen, slik at helsepersonell kan se det når du trenger hjelp.":
        "What you register here becomes part of the summary care record, so health personnel can see it when you need help.",
    "Pårørende og kontaktpersoner": "Next of kin and contacts", "telefon": "phone", "Fjern %(name)s": "Remove %(name)s",
    "Du har ikke registrert noen kontaktpersoner.": "You have not registered any contacts.",
    "Legg til en kontaktperson": "Add a contact", "Relasjon til deg": "Relationship to you",
    "For eksempel datter, nabo eller verge.": "For example daughter, neighbour or guardian.",
    "Lagre kontaktperson": "Save contact", "Sykdommer med egne ord": "Illnesses in your own words",
    "Fjern «%(text)s»": "Remove “%(text)s”", "Beskriv en sykdom eller tilstand": "Describe an illness or condition",
    "Lagre sykdom": "Save illness", "Syn og hørsel": "Sight and hearing", "Jeg har nedsatt syn": "I have impaired sight",
    "Jeg har nedsatt hørsel": "I have impaired hearing", "Hva bør helsepersonell vite?": "What should health personnel know?",
    "Lagre behov": "Save needs", "Tolk": "Interpreter", "Trenger du tolk?": "Do you need an interpreter?", "Ja": "Yes",
    "Språk": "Language", "Fyll ut hvis du trenger tolk.": "Fill in if you need an interpreter.",
    "Lagre tolkebehov": "Save interpreter need",
    "Du kan ikke se personverninnstillingene for denne personen.": "You cannot see the privacy settings of this person.",
    "Dine innstillinger": "Your settings", "alle opplysninger": "all information",
    "helsepersonell ser ikke kjernejournalen din": "health personnel do not see your summary care record",
    "Trekk tilbake: %(what)s": "Withdraw: %(what)s", "Trekk tilbake": "Withdraw",
    "Du har ingen personverninnstillinger. Helsepersonell som behandler deg, kan se kjernejournalen din.":
        "You have no privacy settings. Health personnel who treat you can see your summary care record.",
    "Sperr helsepersonell": "Block health personnel",
    "Helsepersonell du sperrer, får ikke se journalen din, heller ikke i en akuttsituasjon.":
        "Health personnel you block cannot see your record, not even in an emergency.",
    "HPR-nummer": "HPR number",
    "Helsepersonellnummeret står i Helsepersonellregisteret.": "The HPR number is in the Health Personnel Register.",
    "Sperr": "Block", "Skjerm opplysninger": "Restrict information",
    "Helsepersonell må da erklære at du har samtykket, eller at det er en akuttsituasjon, for å se dem. Det blir alltid logget.":
        "Health personnel must then declare that you have consented, or that it is an emergency, to see it. This is always logged.",
    "Hva vil du skjerme?": "What do you want to restrict?", "Skjerm": "Restrict",
    "Reserver deg mot kjernejournal": "Opt out of the summary care record",
    "Du er reservert. Trekk tilbake reservasjonen over for å få kjernejournal igjen.":
        "You have opted out. Withdraw the opt-out above to have a summary care record again.",
    "Helsepersonell ser da ikke kjernejournalen din, heller ikke i en akuttsituasjon.":
        "Health personnel will then not see your summary care record, not even in an emergency.",
    "Jeg vil reservere meg mot kjernejournal": "I want to opt out of the summary care record", "Reserver meg": "Opt me out",
    "Her ser du hvem du kan bruke Helsenorge på vegne av: barn under 16 år du har foreldreansvar for og bor sammen med, og personer som har gitt deg fullmakt.":
        "Here you see whom you can use Helsenorge on behalf of: children under 16 you have parental responsibility for and live with, and people who have given you power of attorney.",
    "Meg selv": "Myself", "fullmakt": "power of attorney", "barn 12–15 år, begrenset innsyn": "child aged 12–15, limited access",
    "barn under %(age)s år": "child under %(age)s", "Hvem vil du se journalen til?": "Whose record do you want to see?",
    "Bytt": "Switch", "Du kan ikke representere noen andre.": "You cannot represent anyone else.",
    "Kjernejournalen kan ikke vises.": "The summary care record cannot be shown.",
    "Kjernejournalen er et sammendrag av viktige helseopplysninger som helsepersonell kan se når du trenger helsehjelp.":
        "The summary care record is a summary of important health information that health personnel can see when you need care.",
    "Skjermet: helsepersonell må erklære samtykke eller akuttilgang for å se dette.":
        "Restricted: health personnel must declare consent or emergency access to see this.",
    "Ingen registrerte opplysninger.": "Nothing registered.",
}


def merge(template: str, locale_dir: Path) -> None:
    from babel.messages.pofile import read_po, write_po
    with open(template, "rb") as fp:
        pot = read_po(fp)
    for lang in ("nb", "en"):
        path = locale_dir / lang / "LC_MESSAGES" / "messages.po"
        old = {}
        if path.exists():
            with path.open("rb") as fp:
                old = {m.id: m.string for m in read_po(fp) if m.id}
        pot.locale = lang
        pot.domain = "messages"
        for message in pot:
            if not message.id:
                continue
            message.string = "" if lang == "nb" else (EN.get(message.id) or old.get(message.id) or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fp:
            write_po(fp, pot, width=100, omit_header=False, no_location=True)


if __name__ == "__main__":
    merge(sys.argv[1], Path(__file__).resolve().parent)
