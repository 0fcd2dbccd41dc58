/* moda-ingest — placeholder main until the service lands. */
#include <stdio.h>
int main(void)
{
    puts("moda-ingest " MODA_VERSION);
    return 0;
}
