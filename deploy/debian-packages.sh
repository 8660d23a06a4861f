#!/usr/bin/env bash
# The Debian packages the demo and the tests use, installed when missing (`make demo` and `make test` call this).
#   mricron-data             a real labelled brain MRI (Colin27 T1 and the AAL atlas): model/data/brain
#   orthanc orthanc-dicomweb a real PACS with DICOMweb, started by the PACS tests
#   dicom3tools              dciodvfy, the DICOM validator the SEG tests run
#   chromium                 a real browser for the teaching page's tests (driven by playwright)
#   npm                      fetches axe-core, the accessibility checker those tests inject into the page
# As root, missing ones are installed; otherwise the one command to run is printed. Under CI=true a package
# that is still missing fails the run, since the tests that need it would otherwise have nothing to test.
set -euo pipefail

packages=(mricron-data orthanc orthanc-dicomweb dicom3tools chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(npm)  # any npm will do (Debian's, or Node's own build)
[ ${#missing[@]} -eq 0 ] && exit 0

command="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    echo "installing ${missing[*]}" >&2
    # Orthanc's post-install would start a system service: the tests start their own Orthanc.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.mediround && chmod +x /usr/sbin/policy-rc.d.mediround
    [ -e /usr/sbin/policy-rc.d ] || ln -s /usr/sbin/policy-rc.d.mediround /usr/sbin/policy-rc.d
    { apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y --no-install-recommends "${missing[@]}"; }; }
    [ "$(readlink /usr/sbin/policy-rc.d 2>/dev/null)" = /usr/sbin/policy-rc.d.mediround ] && rm -f /usr/sbin/policy-rc.d
    rm -f /usr/sbin/policy-rc.d.mediround
    exit 0
fi
echo "missing Debian packages: ${missing[*]}; as root run: $command" >&2
if [ "${CI:-}" = "true" ]; then exit 1; fi
