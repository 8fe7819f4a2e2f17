# shellcheck shell=sh
# Station environment for login shells (engineers running `station` by hand): the same values
# the service reads, from /etc/default/station. Only the station's own keys are exported.
if [ -r /etc/default/station ]; then
    while IFS='=' read -r key value; do
        case $key in
        STATION_DATA_DIR | GENICAM_GENTL64_PATH) export "$key=$value" ;;
        esac
    done </etc/default/station
fi
